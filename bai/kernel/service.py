"""Service ports: the ``ai.backend.service-ports`` label, the service definition DSL, processes.

The label declares services as ``name:protocol:port`` entries separated by
commas, e.g. ``jupyter:http:8080,tensorboard:http:6006``; a service with
several ports writes them as a list, ``name:tcp:[5900,5901]``.  Names are
ASCII letters, digits, ``-`` and ``_``; the protocol is ``tcp``, ``http`` or
``pty``; ports 2000-2003, 2200 and 7681 are reserved for the runner and the
intrinsic services.  :func:`parse_service_ports` is stdlib-only so the agent
reads image labels with it too.

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
from typing import Any, Final

from bai.kernel.output import Outbox
from bai.kernel.runtimes import yield_to_oom_killer

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
        for port in ports:
            if port in RESERVED_PORTS:
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
    def __init__(
        self, name: str, proc: subprocess.Popen[bytes], ports: list[int], url_template: str | None
    ) -> None:
        self.name = name
        self.proc = proc
        self.ports = ports
        self.url_template = url_template
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.stopping = False
        self.watcher: threading.Thread | None = None

    def output_tail(self) -> str:
        data = b"".join(self.tail)[-_TAIL_BYTES:]
        return codecs.decode(data, "utf-8", "replace").strip()


class ServiceManager:
    """Starts, tracks and stops the service processes of one kernel."""

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
        self._starting: set[str] = set()
        self._label_error: str | None = None
        self._tempdir: str | None = None
        self._declared: dict[str, ServicePort] = {}
        try:
            self._declared = {p.name: p for p in parse_service_ports(label)}
        except ServiceError as exc:
            self._label_error = str(exc)

    @property
    def running(self) -> list[str]:
        """Names of the services whose processes are alive."""
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
            if name in self._services or name in self._starting:
                current = self._services.get(name)
                self._result(request_id, name, "running", current.ports if current else [])
                return
            self._starting.add(name)
        chosen: list[int] = []
        try:
            chosen = self._ports_for(name, ports)
            parsed = (
                parse_service_definition(dict(definition), source="definition")
                if definition is not None
                else load_service_definition(self._defs_dir, name)
            )
            prepare(parsed, ports=chosen, runtime_path=self._runtime_path)  # the dry run
            deadline = time.monotonic() + timeout
            rendered = prepare(
                parsed,
                ports=chosen,
                runtime_path=self._runtime_path,
                run_action=lambda a, args, field: self._run_action(name, a, args, field, deadline),
            )
            service = self._spawn(name, rendered, chosen, envs, parsed.url_template)
            error = self._wait_for_port(service, deadline)
            with self._lock:
                if error is None and service.proc.poll() is None:
                    self._services[name] = service
                elif error is None:
                    error = "the service exited right after opening its port"
            if error is not None:
                self._stop(service)
        except ServiceError as exc:
            error = str(exc)
        except Exception as exc:  # a bug must not leave the agent waiting for an answer
            error = f"internal error: {exc!r}"
        finally:
            with self._lock:
                self._starting.discard(name)
        if error is None:
            self._result(request_id, name, "started", chosen)
        else:
            self._result(request_id, name, "failed", chosen, error)

    def _ports_for(self, name: str, ports: list[int] | None) -> list[int]:
        if ports:
            return list(ports)
        if self._label_error is not None:
            raise ServiceError(f"the image's service-ports label is broken: {self._label_error}")
        declared = self._declared.get(name)
        if declared is None:
            raise ServiceError(
                "no such service in the service-ports label", field="name", value=name
            )
        return list(declared.ports)

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
    ) -> _Service:
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
            raise ServiceError(
                f"cannot start the command ({exc})", field="command", value=rendered.command
            ) from None
        yield_to_oom_killer(proc.pid)
        service = _Service(name, proc, ports, url_template)
        service.watcher = threading.Thread(
            target=self._watch, args=(service,), name=f"service-{name}", daemon=True
        )
        service.watcher.start()
        return service

    def _watch(self, service: _Service) -> None:
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
            self._outbox.log(
                "warning", f"service.{service.name}", f"the service exited with code {code}"
            )

    def _wait_for_port(self, service: _Service, deadline: float) -> str | None:
        """None once the first port accepts connections, else why it never will."""
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

    def _stop(self, service: _Service) -> None:
        service.stopping = True
        _signal_group(service.proc.pid, signal.SIGTERM)
        try:
            service.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(service.proc.pid, signal.SIGKILL)
            service.proc.wait()

    def shutdown(self, request_id: str | None, name: str) -> None:
        """Stop service *name* (SIGTERM, SIGKILL after :data:`STOP_GRACE`); answer the result."""
        with self._lock:
            service = self._services.pop(name, None)
        if service is None:
            self._result(request_id, name, "not-running", [])
            return
        self._stop(service)
        self._result(request_id, name, "stopped", service.ports)

    def apps(self) -> list[dict[str, Any]]:
        """The services this kernel offers (the label's, plus any started ad hoc)."""
        with self._lock:
            running = dict(self._services)
        result: list[dict[str, Any]] = []
        for name, declared in self._declared.items():
            service = running.pop(name, None)
            if service is not None:
                url_template = service.url_template
            else:
                try:
                    url_template = load_service_definition(self._defs_dir, name).url_template
                except ServiceError:
                    url_template = None
            result.append(
                {
                    "name": name,
                    "protocol": declared.protocol,
                    "ports": service.ports if service else list(declared.ports),
                    "url_template": url_template,
                    "running": service is not None,
                }
            )
        for name, service in sorted(running.items()):
            result.append(
                {
                    "name": name,
                    "protocol": "tcp",
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
            self._stop(service)
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
