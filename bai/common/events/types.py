"""The typed cluster events: one immutable class per event name.

Every component reports what happens to sessions, kernels, agents, background
tasks and code executions as small immutable event objects: one
:class:`Event` subclass per event name (``session_started``,
``kernel_terminated``, ``agent_heartbeat``, ...), whose fields follow the
spec's SSE event data (session id, owner access key, reason, exit code,
background-task progress).  :data:`EVENT_TYPES` lists every concrete class,
and each class's ``name`` is its fixed wire name.

Session and kernel events (:class:`SessionEvent`, :class:`KernelEvent`) are
the public record of status changes: only the manager's one transition
function publishes them, so a subscriber sees each change once.  An agent
reports the end of its kernels with :class:`AgentKernelTerminated`, which the
manager consumes (anycast) to move the kernel on and which no public stream
shows.

Events are shared between receivers: treat them (including the
``agent_info`` dict of :class:`AgentHeartbeat`) as read-only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, TypeAlias

import msgspec

from bai.common.types import AccessKey, AgentId, KernelId, SessionId

__all__ = [
    "EVENT_TYPES",
    "AgentEvent",
    "AgentHeartbeat",
    "AgentKernelTerminated",
    "AgentStarted",
    "AgentStatsReported",
    "AgentTerminated",
    "BgtaskCancelled",
    "BgtaskDone",
    "BgtaskEvent",
    "BgtaskFailed",
    "BgtaskUpdated",
    "DoSchedule",
    "Event",
    "EventTypes",
    "ExecutionCancelled",
    "ExecutionEvent",
    "ExecutionFinished",
    "ExecutionStarted",
    "ExecutionTimeout",
    "KernelCancelled",
    "KernelCreating",
    "KernelEvent",
    "KernelPreparing",
    "KernelPulling",
    "KernelStarted",
    "KernelTerminated",
    "KernelTerminating",
    "SessionCancelled",
    "SessionCreating",
    "SessionEnqueued",
    "SessionEvent",
    "SessionFailure",
    "SessionPreparing",
    "SessionPulling",
    "SessionResult",
    "SessionScheduled",
    "SessionStarted",
    "SessionSuccess",
    "SessionTerminated",
    "SessionTerminating",
]


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="name"):
    """Base of every event.  ``name`` is the fixed wire name of the concrete class."""

    name: ClassVar[str]


class SessionEvent(Event, frozen=True, kw_only=True):
    """A compute session changed state.

    Mirrors the spec's session SSE data: ``sessionId``, ``ownerAccessKey`` and a
    short ``reason`` (kebab-case, may be empty).
    """

    session_id: SessionId
    owner_access_key: AccessKey
    session_name: str = ""
    reason: str = ""


#: Outcome of a batch session, as the spec's ``result`` field reports it.
SessionResult: TypeAlias = Literal["UNDEFINED", "SUCCESS", "FAILURE"]


class SessionEnqueued(SessionEvent, frozen=True, tag="session_enqueued"):
    """The session entered the pending queue."""


class SessionScheduled(SessionEvent, frozen=True, tag="session_scheduled"):
    """The scheduler placed the session on agents."""


class SessionPreparing(SessionEvent, frozen=True, tag="session_preparing"):
    """Resources are allocated and the agents are preparing the kernels."""


class SessionPulling(SessionEvent, frozen=True, tag="session_pulling"):
    """An agent is pulling the session image."""


class SessionCreating(SessionEvent, frozen=True, tag="session_creating"):
    """The kernels' containers or processes are being created."""


class SessionStarted(SessionEvent, frozen=True, tag="session_started"):
    """The session is ready to run code."""


class SessionTerminating(SessionEvent, frozen=True, tag="session_terminating"):
    """The session is being destroyed."""


class SessionTerminated(SessionEvent, frozen=True, tag="session_terminated"):
    """The session is gone; ``result`` is meaningful for batch sessions only."""

    result: SessionResult = "UNDEFINED"
    exit_code: int | None = None


class SessionSuccess(SessionEvent, frozen=True, tag="session_success"):
    """A batch session's main program exited successfully."""

    exit_code: int | None = None


class SessionFailure(SessionEvent, frozen=True, tag="session_failure"):
    """The session failed: a batch session's result became FAILURE, or a started
    session went to ERROR (it holds its kernels until destroyed)."""

    exit_code: int | None = None


class SessionCancelled(SessionEvent, frozen=True, tag="session_cancelled"):
    """The session ended before it started: cancelled, or its creation failed (ERROR)."""


class KernelEvent(Event, frozen=True, kw_only=True):
    """A kernel (one container or process of a session) changed state."""

    kernel_id: KernelId
    session_id: SessionId
    reason: str = ""


class KernelPreparing(KernelEvent, frozen=True, tag="kernel_preparing"):
    """The agent is preparing the kernel."""


class KernelPulling(KernelEvent, frozen=True, tag="kernel_pulling"):
    """The agent is pulling the kernel's image."""


class KernelCreating(KernelEvent, frozen=True, tag="kernel_creating"):
    """The agent is creating the kernel's container or process."""


class KernelStarted(KernelEvent, frozen=True, tag="kernel_started"):
    """The kernel runner is up."""


class KernelTerminating(KernelEvent, frozen=True, tag="kernel_terminating"):
    """The agent is stopping the kernel."""


class KernelTerminated(KernelEvent, frozen=True, tag="kernel_terminated"):
    """The kernel is gone; ``exit_code`` is its main process's status when known."""

    exit_code: int | None = None


class KernelCancelled(KernelEvent, frozen=True, tag="kernel_cancelled"):
    """The kernel ended before it started: cancelled, or its creation failed (ERROR)."""


class AgentEvent(Event, frozen=True, kw_only=True):
    """An agent reports about itself or its kernels."""

    agent_id: AgentId


class AgentStarted(AgentEvent, frozen=True, tag="agent_started"):
    """The agent came up and is ready for kernels."""

    reason: str = ""


class AgentHeartbeat(AgentEvent, frozen=True, tag="agent_heartbeat"):
    """Periodic liveness report with the agent's info (slots, address, version, ...)."""

    agent_info: dict[str, Any]


class AgentTerminated(AgentEvent, frozen=True, tag="agent_terminated"):
    """The agent is shutting down or was declared lost."""

    reason: str = ""


class AgentKernelTerminated(AgentEvent, frozen=True, tag="agent_kernel_terminated"):
    """The agent's report that one of its kernels is gone, for the manager to act on.

    Not a :class:`KernelEvent`: the public ``kernel_terminated`` follows from
    the manager's transition, so streams of kernel events never show a kernel's
    end twice.
    """

    kernel_id: KernelId
    session_id: SessionId
    reason: str = ""
    exit_code: int | None = None
    #: The kernel's final statistics sample (``last_stat``), when the agent took one.
    last_stat: dict[str, Any] | None = None


class AgentStatsReported(AgentEvent, frozen=True, tag="agent_stats"):
    """A sample of the agent's running kernels: ``kernels`` maps each kernel id to its
    ``last_stat`` (see ``bai.agent.kernel.format_stats``).

    Sent every stats interval while the agent has running kernels; managers
    keep the newest sample in memory as the kernels' live statistics.  Not
    public: no event stream shows it.
    """

    kernels: dict[str, dict[str, Any]]


class BgtaskEvent(Event, frozen=True, kw_only=True):
    """Progress of a background task, as the spec's background-task SSE reports it."""

    task_id: uuid.UUID
    message: str | None = None


class BgtaskUpdated(BgtaskEvent, frozen=True, tag="bgtask_updated"):
    """Progress report; ``current_progress`` is meaningless when ``total_progress`` is 0."""

    current_progress: int = 0
    total_progress: int = 0


class BgtaskDone(BgtaskEvent, frozen=True, tag="bgtask_done"):
    """The background task completed."""


class BgtaskFailed(BgtaskEvent, frozen=True, tag="bgtask_failed"):
    """The background task failed; ``message`` says why."""


class BgtaskCancelled(BgtaskEvent, frozen=True, tag="bgtask_cancelled"):
    """The background task was cancelled (usually by a shutdown)."""


class ExecutionEvent(Event, frozen=True, kw_only=True):
    """A code execution in a session changed state."""

    session_id: SessionId


class ExecutionStarted(ExecutionEvent, frozen=True, tag="execution_started"):
    """A run started in the session."""


class ExecutionFinished(ExecutionEvent, frozen=True, tag="execution_finished"):
    """The run finished."""


class ExecutionTimeout(ExecutionEvent, frozen=True, tag="execution_timeout"):
    """The run exceeded its time limit."""


class ExecutionCancelled(ExecutionEvent, frozen=True, tag="execution_cancelled"):
    """The run was interrupted or cancelled."""


class DoSchedule(Event, frozen=True, tag="do_schedule"):
    """Asks every manager's scheduler to run a scheduling pass now.

    ``origin`` names the dispatcher of the process that asked (empty when it
    has none); that dispatcher was woken directly and ignores its own echo.
    """

    origin: str = ""


#: Every concrete event class, in a stable order.
EVENT_TYPES: tuple[type[Event], ...] = (
    SessionEnqueued,
    SessionScheduled,
    SessionPreparing,
    SessionPulling,
    SessionCreating,
    SessionStarted,
    SessionTerminating,
    SessionTerminated,
    SessionSuccess,
    SessionFailure,
    SessionCancelled,
    KernelPreparing,
    KernelPulling,
    KernelCreating,
    KernelStarted,
    KernelTerminating,
    KernelTerminated,
    KernelCancelled,
    AgentStarted,
    AgentHeartbeat,
    AgentTerminated,
    AgentKernelTerminated,
    AgentStatsReported,
    BgtaskUpdated,
    BgtaskDone,
    BgtaskFailed,
    BgtaskCancelled,
    ExecutionStarted,
    ExecutionFinished,
    ExecutionTimeout,
    ExecutionCancelled,
    DoSchedule,
)

# msgspec keeps the tag in the struct config only; expose it as the ``name``
# class attribute so code can write ``SessionStarted.name`` or ``event.name``.
for _event_type in EVENT_TYPES:
    _tag = _event_type.__struct_config__.tag
    assert isinstance(_tag, str)
    _event_type.name = _tag
del _event_type, _tag

#: A filter on event classes; base classes such as :class:`SessionEvent` match all their kinds.
EventTypes: TypeAlias = Iterable[type[Event]]
