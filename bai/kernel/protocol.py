"""The wire contract between the agent and the kernel runner.

Sockets
=======

The runner **listens** and the agent **dials**, on four NNG addresses that
replace the ZeroMQ ports of the reference implementation:

=============  ==========================  ======  ==========================
channel        NNG pattern (runner side)   port    direction
=============  ==========================  ======  ==========================
input          ``Pull0``                   2000    agent -> runner
output         ``Push0``                   2001    runner -> agent
pty input      ``Pull0``                   2002    agent -> runner (raw bytes)
pty output     ``Push0``                   2003    runner -> agent (raw bytes)
=============  ==========================  ======  ==========================

Local kernels use ``ipc://`` paths (mind the 107-byte limit of a UNIX socket
path); containers use ``tcp://0.0.0.0:2000`` .. ``2003`` (the defaults for
input and output).  The PTY pair is opened only when both of its addresses
are given.  NNG drops inbound messages larger than a socket's
``recv_max_size`` (1 MiB by default): the runner accepts up to
:data:`MAX_MESSAGE_SIZE`; the agent should set ``recv_max_size=0`` on its
output socket because a media record carries a whole image.  A ``Push0``
send blocks until a peer is connected, so the runner buffers (boundedly) while
no agent is attached.  The agent knows the runner is up when a ``status``
request is answered; dial with a short ``reconnect_time_min`` so the first
request is not held back by NNG's default 100 ms redial interval.

A kernel's *bootstrap script* (the session's ``bootstrap_script``, which the
agent writes to ``bootstrap.sh`` in the kernel's ``/home/work``) runs once
when the runner starts (again after a restart), before it answers anything:
with the kernel's environment, in the working directory, its stdout and
stderr going to the runner's own (the kernel's log), stdin from /dev/null.  A
script that exits non-zero or outlives its timeout (by default
:data:`DEFAULT_BOOTSTRAP_TIMEOUT`) makes the runner print why on stderr and
exit with :data:`BOOTSTRAP_FAILED_EXIT` without ever serving, so the agent's
``status`` request is never answered and the kernel fails to start.

Messages on the input and output channels are msgpack arrays ``[op, payload]``
where ``op`` is a string and ``payload`` a map with string keys.  Unknown
payload keys are ignored (so either side may add optional fields); a message
that breaks the rules below is answered with an ``error`` record and changes
nothing.  The PTY channels carry raw terminal bytes in both directions, with
no framing or transformation.

Runs
====

A *run* is one execution the agent asked for, named by a ``run_id`` string the
agent chooses (the API's ``runId``).  Runs are executed one at a time in
arrival order (FIFO); every record a run causes carries its ``run_id``, and
the run's last record is ``finished`` (or ``clean-finished`` /
``build-finished`` for those batch steps).  Output printed while no run is
active (a background thread, a daemon) carries ``"run_id": None``.

A batch-mode run is the three ops ``clean``, ``build`` and ``exec`` sent with
the same ``run_id`` (the agent may send all three at once; they queue in
order).  An empty or missing command skips its step but still produces its
``*-finished`` record with exit code 0, so the agent always sees
``clean-finished`` then ``build-finished`` then ``finished``.  ``build`` with
command ``"*"`` uses the default build heuristic of
:func:`bai.kernel.runtimes.batch.default_build_command`; ``clean`` with ``"*"``
does nothing (as the spec says).  After a build that failed (non-zero exit
code), ``exec`` of the same run does not run its command and finishes with
exit code 127.

A query-mode Python run behaves like one input to the Python REPL in a
namespace kept across runs: the value of a trailing expression is printed
(its ``repr``, also kept in ``_``); an exception prints its traceback to
stderr without the final newline, exactly as the spec's runtime-error example
shows; ``input()``, ``getpass.getpass()`` and ``sys.stdin`` reads send
``waiting-input`` and block until the ``input`` op.

Exit codes: a query-mode Python run always finishes with 0, even when the
code raised (the traceback goes to stderr like the Python REPL's); a shell
command finishes with its exit status, or 128 + N when killed by signal N
(also when the Python process of the kernel dies, e.g. killed by the OOM
killer, in which case its namespace is reset for the next run and stderr
says so); -1 means the runner itself could not do what was asked (the runtime
could not start, the ``app`` runtime runs no code, a bad message).

Output windows and truncation
-----------------------------

``stdout`` and ``stderr`` are each forwarded up to :data:`OUTPUT_LIMIT`
characters per *output window*; the rest is dropped (the user code keeps
running) and one line containing :data:`TRUNCATION_MARKER` is forwarded on
that stream instead.  A window opens when a run (or batch step) starts and
again at each ``continue`` and ``input`` op for the active run.  The agent
sends ``continue`` when each continuation ``execute`` call begins, so one
execute call never sees more than the limit from a window; the agent may cut
its own per-call console at exactly the limit.  Adjacent chunks of one stream
are merged before sending and pending output is flushed at least every
:data:`FLUSH_INTERVAL` seconds, so a long run streams.

Inbound ops (agent -> runner, input channel)
============================================

``code``             ``{"run_id": str, "code": str}`` -- query mode: run a
                     snippet.  ``%resize <rows> <cols>`` and ``%ping`` are
                     terminal commands handled at once (not queued): they
                     resize the PTY / do nothing and answer ``finished``.
``input``            ``{"run_id": str, "text": str}`` -- the answer to a
                     ``waiting-input`` record of that run (an ``error`` record
                     if that run is not waiting for input).
``continue``         ``{"run_id": str}`` -- a continuation execute call of the
                     run began: opens a new output window.
``interrupt``        ``{"run_id": str | None}`` -- interrupt the active run:
                     KeyboardInterrupt in Python code (also while it waits for
                     input); SIGINT to the process group of a shell command,
                     and SIGKILL 3 s later if it still runs.  The run then
                     finishes as usual and the kernel lives on.  With a
                     ``run_id`` that is not the active run it does nothing;
                     queued runs are never interrupted.
``complete``         ``{"request_id": str | None, "code": str,
                     "options": {"line": str, "row": int, "col": int,
                     "post": str}}`` -- completion candidates for the text
                     before the cursor (``options.line[:options.col]`` when
                     given, else ``code``).  Answered with ``completion``.
``clean``            ``{"run_id": str, "command": str | None}``
``build``            ``{"run_id": str, "command": str | None}``
``exec``             ``{"run_id": str, "command": str | None}`` -- batch steps;
                     shell commands run by ``bash -c`` (``sh -c`` without
                     bash) in the runner's working directory, stdin from
                     /dev/null (batch mode asks no input).  ``build`` with
                     ``"*"`` first sends a ``log`` record naming the command
                     it chose.
``status``           ``{"request_id": str | None}`` -- answered with ``status``.
``start-service``    ``{"request_id": str | None, "name": str,
                     "ports": [int] | None, "timeout": float | None,
                     "envs": {str: str} | None, "definition": map | None}`` --
                     start a service port process (see :mod:`bai.kernel.service`)
                     and answer once its first port accepts TCP connections
                     on 127.0.0.1: ``ports`` defaults to the ports of the
                     ``ai.backend.service-ports`` label, ``definition`` to the
                     JSON file ``<service-defs>/<name>.json``, ``timeout``
                     (the bound on the wait for the port) to 30 s.  The
                     intrinsic services ``sshd`` and ``ttyd`` need no
                     definition (:data:`bai.kernel.service.INTRINSIC_SERVICE_PORTS`).
``shutdown-service`` ``{"request_id": str | None, "name": str}``
``get-apps``         ``{"request_id": str | None}``

Outbound records (runner -> agent, output channel)
==================================================

``stdout``, ``stderr``  ``{"run_id": str | None, "text": str}``
``media``               ``{"run_id": str | None, "mime": str, "data": str}`` --
                        text and XML types (``image/svg+xml``) carry the text
                        itself, others an RFC 2397 ``data:`` URI.
``html``                ``{"run_id": str | None, "html": str}``
``log``                 ``{"run_id": str | None, "level": str, "time": str,
                        "logger": str, "message": str}`` -- ``level`` is one of
                        debug/info/warning/error/fatal, ``time`` ISO 8601 UTC
                        (the spec's 4-tuple console item).
``waiting-input``       ``{"run_id": str, "is_password": bool}``
``clean-finished``, ``build-finished``, ``finished``
                        ``{"run_id": str, "exit_code": int}``
``completion``          ``{"request_id": str | None, "matches": [str]}``
``service-result``      ``{"request_id": str | None, "name": str,
                        "status": str, "error": str | None, "ports": [int]}`` --
                        ``status`` is ``started``, ``running`` (it already
                        was), ``failed`` (``error`` says why), ``stopped`` or
                        ``not-running``.
``apps-result``         ``{"request_id": str | None, "apps": [{"name": str,
                        "protocol": str, "ports": [int], "url_template":
                        str | None, "running": bool}]}``
``status``              ``{"request_id": str | None, "runtime": str,
                        "pid": int, "active_run": str | None,
                        "waiting_input": bool, "queued": [str],
                        "services": [str], "pty": bool}``
``error``               ``{"op": str | None, "run_id": str | None,
                        "request_id": str | None, "message": str}`` -- a bad
                        inbound message; when it was a run op with a usable
                        ``run_id`` a ``finished`` record with exit code -1
                        follows, so the run still ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgpack

# typing is imported for the type checker only: the runner imports this module
# at every kernel start, and typing alone costs it about 3 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, Final

DEFAULT_INPUT_ADDR: Final = "tcp://0.0.0.0:2000"
DEFAULT_OUTPUT_ADDR: Final = "tcp://0.0.0.0:2001"
DEFAULT_PTY_INPUT_ADDR: Final = "tcp://0.0.0.0:2002"
DEFAULT_PTY_OUTPUT_ADDR: Final = "tcp://0.0.0.0:2003"

#: Characters of stdout (and, separately, stderr) forwarded per output window.
OUTPUT_LIMIT: Final = 524_288
#: The text every truncation notice contains.
TRUNCATION_MARKER: Final = "[bai: output truncated]"
#: Longest wait before pending console output is sent (seconds).
FLUSH_INTERVAL: Final = 0.05
#: Largest inbound message the runner accepts (bytes).
MAX_MESSAGE_SIZE: Final = 256 * 1024 * 1024
#: The runner's exit status when the bootstrap script failed (the runner never served).
BOOTSTRAP_FAILED_EXIT: Final = 3
#: Seconds a bootstrap script may run (the runner's ``--bootstrap-timeout`` default, and
#: what the agent passes unless told otherwise).  The agent waits for a kernel with a
#: script this long on top of its start deadline, so the runner's limit always strikes
#: first; the manager's ``kernel-creation-timeout`` (5 min) exceeds both together.
DEFAULT_BOOTSTRAP_TIMEOUT: Final = 240.0
#: Longest wait for a service port, whatever the request asks (seconds).
MAX_SERVICE_TIMEOUT: Final = 600.0
DEFAULT_SERVICE_TIMEOUT: Final = 30.0

RUN_OPS: Final = frozenset({"code", "clean", "build", "exec"})
INBOUND_OPS: Final = frozenset(
    {
        "code",
        "input",
        "continue",
        "interrupt",
        "complete",
        "clean",
        "build",
        "exec",
        "status",
        "start-service",
        "shutdown-service",
        "get-apps",
    }
)
OUTBOUND_OPS: Final = frozenset(
    {
        "stdout",
        "stderr",
        "media",
        "html",
        "log",
        "completion",
        "waiting-input",
        "clean-finished",
        "build-finished",
        "finished",
        "service-result",
        "apps-result",
        "status",
        "error",
    }
)
#: The record that ends each kind of run op.
FINISH_OP: Final = {
    "code": "finished",
    "clean": "clean-finished",
    "build": "build-finished",
    "exec": "finished",
}


class ProtocolError(ValueError):
    """A message broke the contract; the text names the field and the bad value."""

    def __init__(self, problem: str, *, field: str | None = None, value: Any = None) -> None:
        self.problem = problem
        self.field = field
        self.value = value
        shown = repr(value)
        if len(shown) > 80:
            shown = f"{shown[:80]}... ({len(shown)} chars)"
        where = f"{field}: " if field else ""
        super().__init__(f"{where}{problem} (got {shown})")


class Message:
    """One validated inbound message; ``payload`` holds every documented field.

    Compares equal to, and unpacks like, the tuple ``(op, payload)``.
    """

    __slots__ = ("op", "payload")

    def __init__(self, op: str, payload: dict[str, Any]) -> None:
        self.op = op
        self.payload = payload

    def __iter__(self) -> Iterator[Any]:
        return iter((self.op, self.payload))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Message):
            return (self.op, self.payload) == (other.op, other.payload)
        return other == (self.op, self.payload)

    def __repr__(self) -> str:
        return f"Message(op={self.op!r}, payload={self.payload!r})"


def encode(op: str, payload: Mapping[str, Any]) -> bytes:
    """Pack one ``[op, payload]`` message.

    Text that cannot be UTF-8 encoded (lone surrogates from user output) is
    sent with those code points replaced, never refused.
    """
    try:
        return msgpack.packb([op, payload], use_bin_type=True)
    except UnicodeEncodeError:
        return msgpack.packb([op, _scrub(payload)], use_bin_type=True)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, Mapping):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _unpack(raw: bytes) -> tuple[str, dict[str, Any]]:
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"not a msgpack message ({exc})", value=raw[:40]) from None
    if not isinstance(obj, list | tuple) or len(obj) != 2:
        raise ProtocolError("expected an [op, payload] array", value=obj)
    op, payload = obj
    if not isinstance(op, str):
        raise ProtocolError("op must be a string", field="op", value=op)
    if not isinstance(payload, dict) or not all(isinstance(k, str) for k in payload):
        raise ProtocolError("payload must be a map with string keys", field=op, value=payload)
    return op, payload


def decode_outbound(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Unpack a record from the output channel (for agents and test drivers)."""
    op, payload = _unpack(raw)
    if op not in OUTBOUND_OPS:
        raise ProtocolError("unknown record type", field="op", value=op)
    return op, payload


def error_context(raw: bytes) -> tuple[str | None, str | None, str | None]:
    """Best-effort ``(op, run_id, request_id)`` of a message that failed to decode."""
    try:
        op, payload = _unpack(raw)
    except ProtocolError:
        return None, None, None
    run_id = payload.get("run_id")
    request_id = payload.get("request_id")
    return (
        op,
        run_id if isinstance(run_id, str) and run_id else None,
        request_id if isinstance(request_id, str) else None,
    )


def decode_inbound(raw: bytes) -> Message:
    """Unpack and validate one message from the input channel.

    Raises :class:`ProtocolError` naming the offending field for anything the
    module docstring does not allow.  Optional fields are filled with their
    defaults, so handlers can index the payload directly.
    """
    op, payload = _unpack(raw)
    if op not in INBOUND_OPS:
        raise ProtocolError("unknown op", field="op", value=op)
    checked: dict[str, Any] = {}
    for name, check in _SCHEMAS[op]:
        checked[name] = check(payload.get(name), f"{op}.{name}")
    return Message(op, checked)


def _run_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError("expected a non-empty string", field=field, value=value)
    if len(value) > 256:
        raise ProtocolError("longer than 256 characters", field=field, value=value)
    return value


def _opt_run_id(value: Any, field: str) -> str | None:
    return None if value is None else _run_id(value, field)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError("expected a string", field=field, value=value)
    return value


def _opt_text(value: Any, field: str) -> str | None:
    return None if value is None else _text(value, field)


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError("expected a non-empty string", field=field, value=value)
    return value


def _ports(value: Any, field: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value:
        raise ProtocolError("expected a non-empty list of port numbers", field=field, value=value)
    for port in value:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ProtocolError("expected port numbers 1..65535", field=field, value=value)
    return list(value)


def _timeout(value: Any, field: str) -> float:
    if value is None:
        return DEFAULT_SERVICE_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError("expected a number of seconds", field=field, value=value)
    if value <= 0:
        raise ProtocolError("must be positive", field=field, value=value)
    return min(float(value), MAX_SERVICE_TIMEOUT)


def _envs(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in value.items()
    ):
        raise ProtocolError("expected a map of variable names to strings", field=field, value=value)
    return dict(value)


def _definition(value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("expected a service definition map", field=field, value=value)
    return value


def _options(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("expected a map", field=field, value=value)
    checked: dict[str, Any] = {}
    for key in ("line", "post"):
        if value.get(key) is not None:
            checked[key] = _text(value[key], f"{field}.{key}")
    for key in ("row", "col"):
        item = value.get(key)
        if item is not None:
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise ProtocolError(
                    "expected a non-negative integer", field=f"{field}.{key}", value=item
                )
            checked[key] = item
    return checked


_COMMAND: tuple[tuple[str, Callable[[Any, str], Any]], ...] = (
    ("run_id", _run_id),
    ("command", _opt_text),
)
_REQUEST: tuple[tuple[str, Callable[[Any, str], Any]], ...] = (("request_id", _opt_text),)
_SCHEMAS: dict[str, tuple[tuple[str, Callable[[Any, str], Any]], ...]] = {
    "code": (("run_id", _run_id), ("code", _text)),
    "input": (("run_id", _run_id), ("text", _text)),
    "continue": (("run_id", _run_id),),
    "interrupt": (("run_id", _opt_run_id),),
    "complete": (*_REQUEST, ("code", _text), ("options", _options)),
    "clean": _COMMAND,
    "build": _COMMAND,
    "exec": _COMMAND,
    "status": _REQUEST,
    "start-service": (
        *_REQUEST,
        ("name", _name),
        ("ports", _ports),
        ("timeout", _timeout),
        ("envs", _envs),
        ("definition", _definition),
    ),
    "shutdown-service": (*_REQUEST, ("name", _name)),
    "get-apps": _REQUEST,
}
