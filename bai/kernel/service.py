"""Service ports: the ``ai.backend.service-ports`` label, the service definition DSL, processes.

The label declares services as ``name:protocol:port`` entries separated by
commas, e.g. ``jupyter:http:8080,tensorboard:http:6006``; a service with
several ports writes them as a list, ``name:tcp:[5900,5901]``.  Names are
ASCII letters, digits, ``-`` and ``_``; the protocol is ``tcp``, ``http`` or
``pty``; ports 2000-2003, 2200 and 7681 are reserved for the runner and the
intrinsic services (an intrinsic service may be declared at its own port,
``sshd:tcp:2200``).  :func:`parse_service_ports` is stdlib-only so the agent
reads image labels with it too.

Every kernel has the intrinsic services of :data:`INTRINSIC_SERVICE_PORTS`
besides its image's, started without a service definition: ``sshd``
(OpenSSH's sshd run as the kernel user, :mod:`bai.kernel.sshd`) and
``ttyd`` (the runner's own web terminal, :mod:`bai.kernel.terminal`).  A
start request names their ports like any other's (by default the label's,
else their own container ports); an image that ships a definition file of
the same name, or a request that carries a definition, runs that instead.

A service definition (``<service-defs>/<name>.json``, spec lines 2752-2886) is::

    {"prestart": [{"action": ..., "args": {...}, "ref": "var"}, ...],
     "command": ["{runtime_path}", "-m", "jupyterlab", "--port", "{ports[0]}"],
     "env": {"NAME": "template"},            # optional (a bai extension)
     "url_template": "http://{host}:{port}/"}  # optional, filled in by clients

Template-enabled strings use Python's brace formatting with ``ports`` (the
list of ports), ``runtime_path`` and each earlier action's ``ref``.
Prestart actions: ``write_file`` (body, filename, mode="755", append=false),
``write_tempfile`` (body, mode="755"; returns the path of a file in a
directory of the runner's own, removed when the runner stops), ``mkdir`` (path;
parents too), ``run_command`` (command; returns ``{"out", "err"}``) and
``log`` (body, debug=false; a ``log`` record).

:class:`ServiceManager` starts a definition only after the whole of it
rendered in a dry run, so a definition with a broken template fails with a
:class:`ServiceError` naming the template and changes nothing.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bai.kernel.output import Outbox
from bai.kernel.runtimes import yield_to_oom_killer

if TYPE_CHECKING:
    from bai.kernel.terminal import TerminalServer

RESERVED_PORTS: Final = frozenset({2000, 2001, 2002, 2003, 2200, 7681})
PROTOCOLS: Final = frozenset({"tcp", "http", "pty"})
ACTIONS: Final = frozenset({"write_file", "write_tempfile", "mkdir", "run_command", "log"})
DEFAULT_SERVICE_DEFS: Final = "/etc/backend.ai/service-defs"
#: Grace period between SIGTERM and SIGKILL when a service is shut down (seconds).
STOP_GRACE: Final = 5.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TAIL_BYTES = 4096
_NO_VALUE: Any = object()


class ServiceError(ValueError):
    """A bad label, service definition or service request; the text names the field and value."""

    def __init__(self, problem: str, *, field: str | None = None, value: Any = _NO_VALUE) -> None:
        self.problem = problem
        self.field = field
        self.value = None if value is _NO_VALUE else value
        where = f"{field}: " if field else ""
        message = f"{where}{problem}"
        if value is not _NO_VALUE:
            shown = repr(value)
            if len(shown) > 80:
                shown = f"{shown[:80]}... ({len(shown)} chars)"
            message += f" (got {shown})"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One declaration of the service-ports label."""

    name: str
    protocol: str
    ports: tuple[int, ...]


#: The services every kernel has besides its image's, at their container ports.
INTRINSIC_SERVICE_PORTS: Final = (
    ServicePort("sshd", "tcp", (2200,)),
    ServicePort("ttyd", "http", (7681,)),
)
_INTRINSIC: Final = {service.name: service for service in INTRINSIC_SERVICE_PORTS}
#: The ``url_template`` of each intrinsic service (ssh is no web app).
_INTRINSIC_URLS: Final = {"sshd": None, "ttyd": "http://{host}:{port}/"}


def parse_service_ports(label: str) -> list[ServicePort]:
    """Parse the ``ai.backend.service-ports`` label; an empty label declares nothing."""
    entries: list[str] = []
    depth = 0
    current = ""
    for char in label:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            entries.append(current)
            current = ""
        else:
            current += char
    entries.append(current)
    result: list[ServicePort] = []
    seen_names: set[str] = set()
    seen_ports: set[int] = set()
    for raw in entries:
        entry = raw.strip()
        if not entry:
            if label.strip():
                raise ServiceError("empty declaration", field="service-ports", value=label)
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3:
            raise ServiceError("expected name:protocol:port", field="service-ports", value=entry)
        name, protocol, port_text = (p.strip() for p in parts)
        if not _NAME.match(name) or not name.isascii():
            raise ServiceError("bad service name", field="service-ports", value=name)
        if name in seen_names:
            raise ServiceError("service declared twice", field="service-ports", value=name)
        if protocol not in PROTOCOLS:
            raise ServiceError(
                f"protocol must be one of {sorted(PROTOCOLS)}",
                field=f"service-ports.{name}",
                value=protocol,
            )
        ports = _parse_ports(port_text, f"service-ports.{name}")
        own = _INTRINSIC.get(name)
        own_port = (own.protocol, own.ports[0]) if own is not None else None
        for port in ports:
            if port in RESERVED_PORTS and (protocol, port) != own_port:
                raise ServiceError(
                    "port reserved for bai itself", field=f"service-ports.{name}", value=port
                )
            if port in seen_ports:
                raise ServiceError("port declared twice", field=f"service-ports.{name}", value=port)
            seen_ports.add(port)
        seen_names.add(name)
        result.append(ServicePort(name, protocol, ports))
    return result


def _parse_ports(text: str, field: str) -> tuple[int, ...]:
    items = text[1:-1].split(",") if text.startswith("[") and text.endswith("]") else [text]
    ports: list[int] = []
    for item in items:
        item = item.strip()
        if not item.isdecimal() or not item.isascii() or not 1 <= int(item) <= 65535:
            raise ServiceError("expected a port number 1..65535", field=field, value=item)
        ports.append(int(item))
    return tuple(ports)


@dataclass(frozen=True, slots=True)
class PrestartAction:
    """One validated prestart action."""

    action: str
    args: Mapping[str, Any]
    ref: str | None


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """A validated service definition (see the module docstring)."""

    command: tuple[str, ...]
    prestart: tuple[PrestartAction, ...] = ()
    env: Mapping[str, str] | None = None
    url_template: str | None = None


def _str_list(value: Any, field: str, *, empty_ok: bool = True) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ServiceError("expected a list of strings", field=field, value=value)
    if not value and not empty_ok:
        raise ServiceError("must not be empty", field=field, value=value)
    return value


def _mode(value: Any, field: str) -> int:
    if value is None:
        return 0o755
    if not isinstance(value, str) or not re.fullmatch(r"[0-7]{1,4}", value):
        raise ServiceError(
            "expected an octal permission string like '755'", field=field, value=value
        )
    return int(value, 8)


def _bool(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ServiceError("expected true or false", field=field, value=value)
    return value


def _parse_action(item: Any, field: str) -> PrestartAction:
    if not isinstance(item, dict):
        raise ServiceError("expected an action object", field=field, value=item)
    action = item.get("action")
    if action not in ACTIONS:
        raise ServiceError(
            f"action must be one of {sorted(ACTIONS)}", field=f"{field}.action", value=action
        )
    args = item.get("args")
    if not isinstance(args, dict):
        raise ServiceError("expected an object", field=f"{field}.args", value=args)
    ref = item.get("ref")
    if ref is not None and (not isinstance(ref, str) or not _REF.match(ref)):
        raise ServiceError("expected an identifier", field=f"{field}.ref", value=ref)
    where = f"{field}.args"
    checked: dict[str, Any]
    if action in ("write_file", "write_tempfile"):
        checked = {
            "body": _str_list(args.get("body"), f"{where}.body"),
            "mode": _mode(args.get("mode"), f"{where}.mode"),
        }
        if action == "write_file":
            filename = args.get("filename")
            if not isinstance(filename, str) or not filename:
                raise ServiceError(
                    "expected a file name", field=f"{where}.filename", value=filename
                )
            checked["filename"] = filename
            checked["append"] = _bool(args.get("append"), f"{where}.append")
    elif action == "mkdir":
        path = args.get("path")
        if not isinstance(path, str) or not path:
            raise ServiceError("expected a directory path", field=f"{where}.path", value=path)
        checked = {"path": path}
    elif action == "run_command":
        checked = {"command": _str_list(args.get("command"), f"{where}.command", empty_ok=False)}
    else:
        body = args.get("body")
        if not isinstance(body, str):
            raise ServiceError("expected a string", field=f"{where}.body", value=body)
        checked = {"body": body, "debug": _bool(args.get("debug"), f"{where}.debug")}
    return PrestartAction(action, checked, ref)


def parse_service_definition(data: Any, *, source: str = "definition") -> ServiceDefinition:
    """Validate a decoded service definition; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise ServiceError("expected a JSON object", field=source, value=data)
    command = tuple(_str_list(data.get("command"), f"{source}.command", empty_ok=False))
    prestart_raw = data.get("prestart", [])
    if not isinstance(prestart_raw, list):
        raise ServiceError(
            "expected a list of actions", field=f"{source}.prestart", value=prestart_raw
        )
    prestart = tuple(
        _parse_action(item, f"{source}.prestart[{i}]") for i, item in enumerate(prestart_raw)
    )
    env = data.get("env")
    if env is not None and (
        not isinstance(env, dict)
        or not all(
            isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in env.items()
        )
    ):
        raise ServiceError(
            "expected a map of variable names to strings", field=f"{source}.env", value=env
        )
    url_template = data.get("url_template")
    if url_template is not None and not isinstance(url_template, str):
        raise ServiceError("expected a string", field=f"{source}.url_template", value=url_template)
    return ServiceDefinition(command, prestart, env, url_template)


def load_service_definition(defs_dir: str, name: str) -> ServiceDefinition:
    """Read and validate ``<defs_dir>/<name>.json``."""
    if not _NAME.match(name):
        raise ServiceError("bad service name", field="name", value=name)
    path = os.path.join(defs_dir, f"{name}.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ServiceError("no service definition file", field="name", value=path) from None
    except (OSError, ValueError) as exc:
        raise ServiceError(
            f"unreadable service definition ({exc})", field="name", value=path
        ) from None
    return parse_service_definition(data, source=path)


def render(template: str, variables: Mapping[str, Any], *, field: str) -> str:
    """Fill in one template-enabled string, raising :class:`ServiceError` naming it."""
    try:
        return template.format_map(variables)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise ServiceError(
            f"cannot fill in the template ({exc!r})", field=field, value=template
        ) from None


@dataclass(frozen=True, slots=True)
class Rendered:
    """A definition with every template filled in (prestart actions still to run)."""

    command: list[str]
    env: dict[str, str]


_Runner = Callable[[PrestartAction, dict[str, Any], str], Any]


def prepare(
    definition: ServiceDefinition,
    *,
    ports: list[int],
    runtime_path: str,
    run_action: _Runner | None = None,
) -> Rendered:
    """Render *definition*, running each prestart action with *run_action* when given.

    Without *run_action* this is the dry run: refs get placeholder values of
    the right shape (a path, ``{"out": "", "err": ""}``) and nothing happens
    outside this function.
    """
    variables: dict[str, Any] = {"ports": list(ports), "runtime_path": runtime_path}
    for i, action in enumerate(definition.prestart):
        field = f"prestart[{i}]"
        args: dict[str, Any] = {}
        for key, value in action.args.items():
            if isinstance(value, str):
                args[key] = render(value, variables, field=f"{field}.args.{key}")
            elif isinstance(value, list):
                args[key] = [
                    render(v, variables, field=f"{field}.args.{key}[{j}]")
                    for j, v in enumerate(value)
                ]
            else:
                args[key] = value
        if run_action is not None:
            result = run_action(action, args, field)
        elif action.action == "write_tempfile":
            result = os.path.join(tempfile.gettempdir(), "placeholder")
        elif action.action == "run_command":
            result = {"out": "", "err": ""}
        else:
            result = None
        if action.ref is not None:
            variables[action.ref] = result
    command = [
        render(part, variables, field=f"command[{i}]") for i, part in enumerate(definition.command)
    ]
    env = {
        key: render(value, variables, field=f"env.{key}")
        for key, value in (definition.env or {}).items()
    }
    return Rendered(command, env)


class _Service:
    """A started service: its name, ports and how it ends."""

    def __init__(self, name: str, ports: list[int], url_template: str | None) -> None:
        self.name = name
        self.ports = ports
        self.url_template = url_template
        self.stopping = False

    def alive(self) -> bool:
        """Whether the service still runs."""
        raise NotImplementedError

    def stop(self) -> None:
        """End the service and everything it started; returns once they are gone."""
        raise NotImplementedError


class _ProcessService(_Service):
    """A service that is a process (and its process group), its output pipe drained."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        ports: list[int],
        url_template: str | None,
        private_dir: str | None = None,
    ) -> None:
        super().__init__(name, ports, url_template)
        self.proc = proc
        #: A directory of the runner's own that the service needs; removed when it ends.
        self.private_dir = private_dir
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.watcher: threading.Thread | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output_tail(self) -> str:
        data = b"".join(self.tail)[-_TAIL_BYTES:]
        return codecs.decode(data, "utf-8", "replace").strip()

    def stop(self) -> None:
        """SIGTERM to the process group and every descendant, SIGKILL after :data:`STOP_GRACE`.

        Descendants that left the group (sshd's per-connection processes make
        sessions of their own) are found through ``/proc`` before any signal,
        while they are still below the service.
        """
        self.stopping = True
        with _Descendants(self.proc.pid) as descendants:
            _signal_group(self.proc.pid, signal.SIGTERM)
            descendants.signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            if not descendants.wait(max(deadline - time.monotonic(), 0.0)):
                descendants.signal(signal.SIGKILL)
        self.remove_private_dir()

    def remove_private_dir(self) -> None:
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)


class _TerminalService(_Service):
    """The ``ttyd`` intrinsic service: the runner's terminal server, threads in the runner."""

    def __init__(self, name: str, server: TerminalServer, ports: list[int]) -> None:
        super().__init__(name, ports, _INTRINSIC_URLS["ttyd"])
        self.server = server

    def alive(self) -> bool:
        return True  # it ends only when stopped

    def stop(self) -> None:
        self.stopping = True
        self.server.close()


class _Descendants:
    """The processes below a pid at one moment, each held by a pidfd (signalled race-free)."""

    def __init__(self, pid: int) -> None:
        self._pidfds: list[int] = []
        if not hasattr(os, "pidfd_open"):  # before Linux 5.3: the process group alone
            return
        for child in _descendant_pids(pid):
            with contextlib.suppress(OSError):  # it ended meanwhile
                self._pidfds.append(os.pidfd_open(child))

    def __enter__(self) -> _Descendants:
        return self

    def __exit__(self, *exc: object) -> None:
        for pidfd in self._pidfds:
            os.close(pidfd)

    def signal(self, signum: int) -> None:
        for pidfd in self._pidfds:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signum)

    def wait(self, timeout: float) -> bool:
        """Whether all of them ended within *timeout* seconds."""
        deadline = time.monotonic() + timeout
        poller = select.poll()  # not select(): the fds may be numbered past FD_SETSIZE
        pending = set(self._pidfds)
        for pidfd in pending:
            poller.register(pidfd, select.POLLIN)
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for pidfd, _ in poller.poll(remaining * 1000):
                poller.unregister(pidfd)
                pending.discard(pidfd)
        return True


def _descendant_pids(pid: int) -> list[int]:
    """The processes below *pid* now, from ``/proc`` (parents before their children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdecimal():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), ()):
            found.append(child)
            queue.append(child)
    return found


class ServiceManager:
    """Starts, tracks and stops the services of one kernel."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        label: str,
        defs_dir: str,
        runtime_path: str,
    ) -> None:
        self._outbox = outbox
        self._defs_dir = defs_dir
        self._runtime_path = runtime_path
        self._lock = threading.Lock()
        self._services: dict[str, _Service] = {}
        # A start in progress, by name: a second start request waits for its outcome.
        self._starting: dict[str, tuple[threading.Event, list[str]]] = {}
        self._label_error: str | None = None
        self._tempdir: str | None = None
        self._declared: dict[str, ServicePort] = {}
        try:
            self._declared = {p.name: p for p in parse_service_ports(label)}
        except ServiceError as exc:
            self._label_error = str(exc)

    @property
    def running(self) -> list[str]:
        """Names of the services that run."""
        with self._lock:
            return sorted(self._services)

    def _result(
        self,
        request_id: str | None,
        name: str,
        status: str,
        ports: list[int],
        error: str | None = None,
    ) -> None:
        self._outbox.record(
            "service-result",
            {
                "request_id": request_id,
                "name": name,
                "status": status,
                "error": error,
                "ports": ports,
            },
        )

    def _is_intrinsic(self, name: str, definition: Mapping[str, Any] | None) -> bool:
        """Whether *name* runs as an intrinsic service (no definition replaces it)."""
        if name not in _INTRINSIC or definition is not None:
            return False
        return not os.path.exists(os.path.join(self._defs_dir, f"{name}.json"))

    def start(
        self,
        request_id: str | None,
        name: str,
        *,
        ports: list[int] | None,
        timeout: float,
        envs: Mapping[str, str],
        definition: Mapping[str, Any] | None,
    ) -> None:
        """Start service *name*, answering with a ``service-result`` (blocks up to *timeout*)."""
        with self._lock:
            current = self._services.get(name)
            pending = self._starting.get(name)
            if current is None and pending is None:
                done, errors = self._starting[name] = (threading.Event(), [])
        if current is not None:
            self._result(request_id, name, "running", current.ports)
            return
        if pending is not None:
            self._await_start(request_id, name, pending, timeout)
            return
        error: str | None = None
        chosen: list[int] = []
        try:
            intrinsic = self._is_intrinsic(name, definition)
            chosen = self._ports_for(name, ports, intrinsic=intrinsic)
            deadline = time.monotonic() + timeout
            if not (intrinsic and name == "ttyd"):  # the terminal server binds, and says so
                _check_ports_free(chosen)
            if intrinsic:
                service = self._start_intrinsic(name, chosen, envs, deadline)
            else:
                parsed = (
                    parse_service_definition(dict(definition), source="definition")
                    if definition is not None
                    else load_service_definition(self._defs_dir, name)
                )
                prepare(parsed, ports=chosen, runtime_path=self._runtime_path)  # the dry run
                rendered = prepare(
                    parsed,
                    ports=chosen,
                    runtime_path=self._runtime_path,
                    run_action=lambda a, args, field: self._run_action(
                        name, a, args, field, deadline
                    ),
                )
                service = self._spawn(name, rendered, chosen, envs, parsed.url_template)
            error = self._wait_for_port(service, deadline)
            with self._lock:
                if error is None and service.alive():
                    self._services[name] = service
                elif error is None:
                    error = "the service exited right after opening its port"
            if error is not None:
                service.stop()
        except ServiceError as exc:
            error = str(exc)
        except Exception as exc:  # a bug must not leave the agent waiting for an answer
            error = f"internal error: {exc!r}"
        finally:
            with self._lock:
                del self._starting[name]
            if error is not None:
                errors.append(error)
            done.set()
        if error is None:
            self._result(request_id, name, "started", chosen)
        else:
            self._result(request_id, name, "failed", chosen, error)

    def _await_start(
        self,
        request_id: str | None,
        name: str,
        pending: tuple[threading.Event, list[str]],
        timeout: float,
    ) -> None:
        """Answer a start request that came while *name* was starting, once it started or not."""
        done, errors = pending
        if not done.wait(timeout):
            self._result(request_id, name, "failed", [], "the service is still starting")
            return
        with self._lock:
            current = self._services.get(name)
        if current is not None:
            self._result(request_id, name, "running", current.ports)
        else:
            self._result(request_id, name, "failed", [], errors[0] if errors else "not started")

    def _ports_for(self, name: str, ports: list[int] | None, *, intrinsic: bool) -> list[int]:
        if ports:
            return list(ports)
        declared = self._declared.get(name)
        if declared is not None:
            return list(declared.ports)
        if intrinsic:
            return list(_INTRINSIC[name].ports)
        if self._label_error is not None:
            raise ServiceError(f"the image's service-ports label is broken: {self._label_error}")
        raise ServiceError("no such service in the service-ports label", field="name", value=name)

    def _start_intrinsic(
        self, name: str, ports: list[int], envs: Mapping[str, str], deadline: float
    ) -> _Service:
        if name == "ttyd":
            from bai.kernel.terminal import TerminalServer

            try:
                server = TerminalServer(ports[0], environ=envs)
            except OSError as exc:
                raise ServiceError(
                    f"the terminal server cannot listen on 127.0.0.1:{ports[0]} ({exc.strerror})",
                    field="ports",
                    value=ports,
                ) from None
            server.start()
            return _TerminalService(name, server, ports)
        from bai.kernel import sshd

        private_dir = tempfile.mkdtemp(prefix="bai-sshd-")
        try:
            command = sshd.prepare(
                private_dir,
                ports,
                workdir=os.getcwd(),
                environ={**os.environ, **envs},
                timeout=max(deadline - time.monotonic(), 0.1),
            )
        except sshd.SshdError as exc:
            shutil.rmtree(private_dir, ignore_errors=True)
            raise ServiceError(str(exc)) from None
        except BaseException:
            shutil.rmtree(private_dir, ignore_errors=True)
            raise
        return self._spawn(
            name,
            Rendered(command, {}),
            ports,
            envs,
            _INTRINSIC_URLS["sshd"],
            private_dir=private_dir,
        )

    def _run_action(
        self, name: str, action: PrestartAction, args: dict[str, Any], field: str, deadline: float
    ) -> Any:
        try:
            if action.action == "write_file":
                flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if args["append"] else os.O_TRUNC)
                fd = os.open(args["filename"], flags, args["mode"])
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write("".join(args["body"]))
                os.chmod(args["filename"], args["mode"])
                return None
            if action.action == "write_tempfile":
                with self._lock:
                    if self._tempdir is None:
                        self._tempdir = tempfile.mkdtemp(prefix="bai-services-")
                fd, path = tempfile.mkstemp(prefix=f"{name}-", dir=self._tempdir)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write("".join(args["body"]))
                os.chmod(path, args["mode"])
                return path
            if action.action == "mkdir":
                os.makedirs(args["path"], exist_ok=True)
                return None
            if action.action == "run_command":
                done = subprocess.run(
                    args["command"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=max(deadline - time.monotonic(), 0.1),
                    check=False,
                )
                return {
                    "out": done.stdout.decode("utf-8", "replace"),
                    "err": done.stderr.decode("utf-8", "replace"),
                }
            level = "debug" if args["debug"] else "info"
            self._outbox.log(level, f"service.{name}", args["body"])
            return None
        except subprocess.TimeoutExpired:
            raise ServiceError(
                "the command did not finish in time", field=field, value=args["command"]
            ) from None
        except OSError as exc:
            raise ServiceError(f"{action.action} failed ({exc})", field=field, value=args) from None

    def _spawn(
        self,
        name: str,
        rendered: Rendered,
        ports: list[int],
        envs: Mapping[str, str],
        url_template: str | None,
        *,
        private_dir: str | None = None,
    ) -> _ProcessService:
        env = {**os.environ, **rendered.env, **envs}
        try:
            proc = subprocess.Popen(
                rendered.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
            )
        except OSError as exc:
            if private_dir is not None:
                shutil.rmtree(private_dir, ignore_errors=True)
            raise ServiceError(
                f"cannot start the command ({exc})", field="command", value=rendered.command
            ) from None
        yield_to_oom_killer(proc.pid)
        service = _ProcessService(name, proc, ports, url_template, private_dir)
        service.watcher = threading.Thread(
            target=self._watch, args=(service,), name=f"service-{name}", daemon=True
        )
        service.watcher.start()
        return service

    def _watch(self, service: _ProcessService) -> None:
        """Keep the service's output pipe drained (its tail kept for errors); report its exit."""
        assert service.proc.stdout is not None
        stream = service.proc.stdout
        while data := os.read(stream.fileno(), 65536):
            service.tail.append(data)
            service.tail_size += len(data)
            while service.tail_size - len(service.tail[0]) >= _TAIL_BYTES:
                service.tail_size -= len(service.tail.popleft())
        stream.close()
        code = service.proc.wait()
        with self._lock:
            mine = self._services.get(service.name) is service
            if mine:
                del self._services[service.name]
        if mine and not service.stopping:
            service.remove_private_dir()
            self._outbox.log(
                "warning", f"service.{service.name}", f"the service exited with code {code}"
            )

    def _wait_for_port(self, service: _Service, deadline: float) -> str | None:
        """None once the first port accepts connections, else why it never will."""
        if not isinstance(service, _ProcessService):
            return None  # an in-process server listens before it is returned
        port = service.ports[0]
        while True:
            code = service.proc.poll()
            if code is not None:
                if service.watcher is not None:
                    service.watcher.join(0.5)  # let it read the last output
                tail = service.output_tail()
                return f"the service exited with code {code} before port {port} opened" + (
                    f"; its last output:\n{tail}" if tail else ""
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return None
            except OSError:
                pass
            if time.monotonic() >= deadline:
                return f"the service did not accept connections on port {port} in time"
            time.sleep(0.05)

    def shutdown(self, request_id: str | None, name: str) -> None:
        """Stop service *name* (SIGTERM, SIGKILL after :data:`STOP_GRACE`); answer the result."""
        with self._lock:
            service = self._services.pop(name, None)
        if service is None:
            self._result(request_id, name, "not-running", [])
            return
        service.stop()
        self._result(request_id, name, "stopped", service.ports)

    def apps(self) -> list[dict[str, Any]]:
        """The services this kernel offers (the label's, plus any started ad hoc).

        The agent declares the intrinsic services in the label it gives the
        runner, with the host ports they are reached at.
        """
        with self._lock:
            running = dict(self._services)
        result: list[dict[str, Any]] = []
        for name, port in self._declared.items():
            service = running.pop(name, None)
            if service is not None:
                url_template = service.url_template
            elif self._is_intrinsic(name, None):
                url_template = _INTRINSIC_URLS[name]
            else:
                try:
                    url_template = load_service_definition(self._defs_dir, name).url_template
                except ServiceError:
                    url_template = None
            result.append(
                {
                    "name": name,
                    "protocol": port.protocol,
                    "ports": service.ports if service else list(port.ports),
                    "url_template": url_template,
                    "running": service is not None,
                }
            )
        for name, service in sorted(running.items()):
            intrinsic = _INTRINSIC.get(name)
            result.append(
                {
                    "name": name,
                    "protocol": intrinsic.protocol if intrinsic else "tcp",
                    "ports": service.ports,
                    "url_template": service.url_template,
                    "running": True,
                }
            )
        return result

    def close(self) -> None:
        """Stop every service and remove the files ``write_tempfile`` made (runner shutdown)."""
        with self._lock:
            services = list(self._services.values())
            self._services.clear()
        for service in services:
            service.stop()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)


def _check_ports_free(ports: list[int]) -> None:
    """Raise :class:`ServiceError` when something listens on one of *ports* already.

    Else the wait for the port would take that listener for the service.
    """
    for port in ports:
        with socket.socket() as probe:
            # SO_REUSEADDR: connections of an earlier run in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                raise ServiceError(
                    f"port {port} of 127.0.0.1 is taken already ({exc.strerror})",
                    field="ports",
                    value=ports,
                ) from None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
