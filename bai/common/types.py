"""Identifiers, status enums, the named status groups and the status transition tables.

This module is the single authority on which status changes are legal: the
manager's one transition function calls :func:`check_transition` before every
write, so a session or kernel can never jump to a state the tables forbid.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from typing import Final, NewType

from bai.common.errors import BaiError

SessionId = NewType("SessionId", uuid.UUID)
KernelId = NewType("KernelId", uuid.UUID)
AgentId = NewType("AgentId", str)
AccessKey = NewType("AccessKey", str)


class SessionTypes(enum.StrEnum):
    """What a session is for (the spec's session types)."""

    INTERACTIVE = "interactive"
    BATCH = "batch"
    INFERENCE = "inference"
    SYSTEM = "system"


class ClusterMode(enum.StrEnum):
    """Whether a cluster session's kernels share one agent or spread over several."""

    SINGLE_NODE = "single-node"
    MULTI_NODE = "multi-node"


class SessionResult(enum.StrEnum):
    """The outcome of a finished session (set for batch sessions by exit code)."""

    UNDEFINED = "UNDEFINED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


class SlotTypes(enum.StrEnum):
    """How a resource slot's amount is counted."""

    COUNT = "count"
    BYTES = "bytes"
    UNIQUE = "unique"


class SessionStatus(enum.StrEnum):
    """Lifecycle status of a compute session."""

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PREPARING = "PREPARING"
    PULLING = "PULLING"
    PREPARED = "PREPARED"
    CREATING = "CREATING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    RUNNING_DEGRADED = "RUNNING_DEGRADED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


class KernelStatus(enum.StrEnum):
    """Lifecycle status of one kernel (container or process) of a session."""

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PREPARING = "PREPARING"
    PULLING = "PULLING"
    PREPARED = "PREPARED"
    CREATING = "CREATING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    RUNNING_DEGRADED = "RUNNING_DEGRADED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


AnyStatus = SessionStatus | KernelStatus

# Sessions and kernels share one lifecycle, so one table (by status name) serves both.
# Anything not started yet may be CANCELLED; once an agent may hold a kernel the way
# out is TERMINATING, so that cleanup on the agent always happens.
_PRE_START_EXITS = ("ERROR", "CANCELLED", "TERMINATING")
_TRANSITIONS_BY_NAME: dict[str, frozenset[str]] = {
    "PENDING": frozenset({"SCHEDULED", "ERROR", "CANCELLED"}),
    "SCHEDULED": frozenset({"PREPARING", "PULLING", "PREPARED", *_PRE_START_EXITS}),
    "PREPARING": frozenset({"PULLING", "PREPARED", "CREATING", *_PRE_START_EXITS}),
    "PULLING": frozenset({"PREPARED", "CREATING", *_PRE_START_EXITS}),
    "PREPARED": frozenset({"CREATING", *_PRE_START_EXITS}),
    "CREATING": frozenset({"RUNNING", *_PRE_START_EXITS}),
    "RUNNING": frozenset({"RESTARTING", "RUNNING_DEGRADED", "TERMINATING", "TERMINATED", "ERROR"}),
    "RESTARTING": frozenset({"RUNNING", "RUNNING_DEGRADED", "TERMINATING", "TERMINATED", "ERROR"}),
    "RUNNING_DEGRADED": frozenset({"RUNNING", "RESTARTING", "TERMINATING", "TERMINATED", "ERROR"}),
    "TERMINATING": frozenset({"TERMINATED", "ERROR"}),
    "TERMINATED": frozenset(),
    # A session in ERROR may still hold kernels: destroying it must clean them up.
    "ERROR": frozenset({"TERMINATING", "TERMINATED"}),
    "CANCELLED": frozenset(),
}

SESSION_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus(old): frozenset(SessionStatus(n) for n in new)
    for old, new in _TRANSITIONS_BY_NAME.items()
}
KERNEL_TRANSITIONS: dict[KernelStatus, frozenset[KernelStatus]] = {
    KernelStatus(old): frozenset(KernelStatus(n) for n in new)
    for old, new in _TRANSITIONS_BY_NAME.items()
}

#: Statuses a session or kernel never leaves.
TERMINAL_STATUSES = frozenset({"TERMINATED", "CANCELLED"})
#: Statuses in which a session or kernel holds (or is about to hold) resources on an agent.
RESOURCE_OCCUPYING_STATUSES = frozenset(
    {
        "SCHEDULED",
        "PREPARING",
        "PULLING",
        "PREPARED",
        "CREATING",
        "RUNNING",
        "RESTARTING",
        "RUNNING_DEGRADED",
        "TERMINATING",
    }
)
#: Statuses (by name, of sessions and kernels) before the first start.
NOT_STARTED_STATUSES: Final = frozenset(
    {"PENDING", "SCHEDULED", "PREPARING", "PULLING", "PREPARED", "CREATING"}
)

# Named status groups of sessions and of kernels (``KERNEL`` in the name).

#: Statuses of a session that has not started yet (what ``enqueueOnly=false`` waits out).
STARTING_STATUSES: Final = frozenset(SessionStatus(name) for name in NOT_STARTED_STATUSES)
#: Statuses of a session that is not over (its name is taken).
ACTIVE_STATUSES: Final = frozenset(SessionStatus) - {
    SessionStatus.TERMINATED,
    SessionStatus.CANCELLED,
}
#: Statuses of a session whose kernels are being created.
PRE_START_STATUSES: Final = frozenset(
    {
        SessionStatus.PREPARING,
        SessionStatus.PULLING,
        SessionStatus.PREPARED,
        SessionStatus.CREATING,
    }
)
#: Statuses of a session whose kernels run.
RUNNING_STATUSES: Final = frozenset({SessionStatus.RUNNING, SessionStatus.RUNNING_DEGRADED})
#: Statuses of a kernel being created.
KERNEL_PRE_START_STATUSES: Final = frozenset(
    {
        KernelStatus.PREPARING,
        KernelStatus.PULLING,
        KernelStatus.PREPARED,
        KernelStatus.CREATING,
    }
)
#: Kernel statuses after the agent reported the kernel created.
STARTED_KERNEL_STATUSES: Final = frozenset(
    {
        KernelStatus.RUNNING,
        KernelStatus.RESTARTING,
        KernelStatus.RUNNING_DEGRADED,
        KernelStatus.TERMINATING,
    }
)
#: Kernel statuses an agent has (or is creating) the kernel in.
LIVE_KERNEL_STATUSES: Final = (
    frozenset({KernelStatus.SCHEDULED}) | KERNEL_PRE_START_STATUSES | STARTED_KERNEL_STATUSES
)
#: Kernel statuses checked against heartbeats: the kernel must exist on its agent.
REPORTED_KERNEL_STATUSES: Final = frozenset({KernelStatus.RUNNING, KernelStatus.RUNNING_DEGRADED})


class InvalidTransition(BaiError):
    """A status change that the transition table forbids was attempted."""

    def __init__(self, old: AnyStatus, new: AnyStatus) -> None:
        self.old = old
        self.new = new
        kind = "session" if isinstance(old, SessionStatus) else "kernel"
        allowed = ", ".join(sorted(_TRANSITIONS_BY_NAME[old.value])) or "none (final status)"
        super().__init__(f"{kind} cannot go from {old.value} to {new.value}; allowed: {allowed}")


def check_transition(old: AnyStatus, new: AnyStatus) -> None:
    """Raise :class:`InvalidTransition` unless *old* → *new* is in the table.

    Both statuses must be of the same kind (session or kernel).  Staying in the
    same status is not a transition and is rejected: callers skip no-op updates
    instead of writing a history entry for them.
    """
    if type(old) is not type(new):
        raise TypeError(f"cannot compare a {type(old).__name__} with a {type(new).__name__}")
    if new.value not in _TRANSITIONS_BY_NAME[old.value]:
        raise InvalidTransition(old, new)


def is_terminal(status: AnyStatus) -> bool:
    """True for statuses that are never left (TERMINATED, CANCELLED)."""
    return status.value in TERMINAL_STATUSES


# Order of the statuses a kernel passes through on its way to RUNNING.
_STARTUP_ORDER = (
    KernelStatus.PENDING,
    KernelStatus.SCHEDULED,
    KernelStatus.PREPARING,
    KernelStatus.PULLING,
    KernelStatus.PREPARED,
    KernelStatus.CREATING,
    KernelStatus.RUNNING,
)
_ENDING = frozenset({KernelStatus.TERMINATING, KernelStatus.TERMINATED, KernelStatus.CANCELLED})


def derive_session_status(kernel_statuses: Iterable[KernelStatus]) -> SessionStatus:
    """Compute a session's status from the statuses of its kernels.

    The rules, first match wins:

    1. all kernels agree → that status;
    2. any kernel in ERROR → ERROR;
    3. all kernels ended (TERMINATED or CANCELLED) → TERMINATED;
    4. all kernels ending (TERMINATING, TERMINATED, CANCELLED) → TERMINATING;
    5. any kernel RESTARTING → RESTARTING;
    6. some kernel still running while others ended or degraded → RUNNING_DEGRADED;
    7. all kernels on the way up (PENDING … RUNNING) → the least advanced one's
       status, since the session is only as far along as its slowest kernel;
    8. otherwise some kernels are starting while others already ended: the
       session cannot come up whole and is being torn down → TERMINATING.

    Raises :class:`ValueError` for a session without kernels.
    """
    statuses = set(kernel_statuses)
    if not statuses:
        raise ValueError("a session needs at least one kernel to derive its status")
    if len(statuses) == 1:
        return SessionStatus(next(iter(statuses)).value)
    if KernelStatus.ERROR in statuses:
        return SessionStatus.ERROR
    if statuses <= {KernelStatus.TERMINATED, KernelStatus.CANCELLED}:
        return SessionStatus.TERMINATED
    if statuses <= _ENDING:
        return SessionStatus.TERMINATING
    if KernelStatus.RESTARTING in statuses:
        return SessionStatus.RESTARTING
    running = {KernelStatus.RUNNING, KernelStatus.RUNNING_DEGRADED}
    if statuses & running and statuses <= running | _ENDING:
        return SessionStatus.RUNNING_DEGRADED
    if statuses <= set(_STARTUP_ORDER):
        slowest = min(statuses, key=_STARTUP_ORDER.index)
        return SessionStatus(slowest.value)
    return SessionStatus.TERMINATING
