"""The plain data the scheduling core reads and the decisions it returns.

Inputs are frozen dataclasses the dispatcher fills from the database; they do
no validation when built, so one malformed row cannot stop a pass: the core
checks each record when it reads it and turns a bad pending session into a
:class:`SchedulerError` decision and a bad agent or running session into an
entry of :attr:`SchedulingResult.input_errors`.

Outputs carry everything the dispatcher writes back in one transaction: per
session a :class:`Scheduled` placement (one agent per kernel), a
:class:`NotScheduled` with the predicates that failed and the new retry count,
or a :class:`SchedulerError`; per agent its new occupied slots and container
count; per resource group the round-robin cursor.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import (
    AccessKey,
    AgentId,
    ClusterMode,
    SessionId,
    SessionResult,
    SessionStatus,
)
from bai.manager.scheduler.options import SchedulerOptions

__all__ = [
    "AgentInfo",
    "Decision",
    "DependencyState",
    "InvalidSchedulingInput",
    "KeypairPolicy",
    "NotScheduled",
    "PendingSession",
    "PredicateFailure",
    "RunningSession",
    "Scheduled",
    "SchedulerError",
    "SchedulingInput",
    "SchedulingResult",
]


class InvalidSchedulingInput(InvalidValue):
    """A pending session, agent, running session or policy record was malformed."""


@dataclass(frozen=True, slots=True)
class PendingSession:
    """A session waiting in the queue.

    ``kernels`` holds each kernel's requested slots, in the order of the
    session's kernels (its length is the cluster size).  ``retries`` is the
    number of passes that have tried the session without starting it
    (``status_data.scheduler.retries``).  ``dependencies`` must all have
    finished successfully before the session may start; ``starts_at`` (when
    set) is the earliest time it may start; ``designated_agent`` (when set)
    is the only agent its kernels may go to.  Times are timezone-aware.
    """

    id: SessionId
    access_key: AccessKey
    user_id: uuid.UUID
    group_id: uuid.UUID
    domain_name: str
    resource_group: str
    created_at: datetime
    kernels: tuple[ResourceSlot, ...]
    priority: int = 0
    retries: int = 0
    cluster_mode: ClusterMode = ClusterMode.SINGLE_NODE
    architecture: str = "x86_64"
    dependencies: tuple[SessionId, ...] = ()
    starts_at: datetime | None = None
    designated_agent: AgentId | None = None

    @property
    def cluster_size(self) -> int:
        """How many kernels the session has."""
        return len(self.kernels)


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent as the scheduler sees it.

    ``available_slots`` is the agent's capacity, ``occupied_slots`` what its
    kernels hold now; an agent with ``schedulable=False`` (excluded by an
    administrator) keeps its kernels but receives no new ones.
    """

    id: AgentId
    resource_group: str
    available_slots: ResourceSlot
    occupied_slots: ResourceSlot
    architecture: str = "x86_64"
    container_count: int = 0
    schedulable: bool = True


@dataclass(frozen=True, slots=True)
class RunningSession:
    """A session that holds resources (any status in ``RESOURCE_OCCUPYING_STATUSES``).

    Running sessions are what keypair, user, group and domain usage, keypair
    concurrency and DRF shares are computed from.
    """

    id: SessionId
    access_key: AccessKey
    user_id: uuid.UUID
    group_id: uuid.UUID
    domain_name: str
    resource_group: str
    occupied_slots: ResourceSlot


@dataclass(frozen=True, slots=True)
class KeypairPolicy:
    """The keypair resource policy limits the scheduler enforces.

    ``total_resource_slots`` comes from :meth:`ResourceSlot.from_policy`, so a
    slot it does not name means zero (``LIMITED``) or infinity
    (``UNLIMITED``).  ``None`` means no limit for the other fields.
    ``max_pending_session_count`` and ``max_pending_session_resource_slots``
    bound how much of a keypair's queue is eligible: only the oldest pending
    sessions within those bounds may start.
    """

    total_resource_slots: ResourceSlot
    max_concurrent_sessions: int | None = None
    max_containers_per_session: int | None = None
    max_pending_session_count: int | None = None
    max_pending_session_resource_slots: ResourceSlot | None = None


@dataclass(frozen=True, slots=True)
class DependencyState:
    """Where a session that another one depends on stands now."""

    status: SessionStatus
    result: SessionResult = SessionResult.UNDEFINED


@dataclass(frozen=True)
class SchedulingInput:
    """Everything one scheduling pass reads.

    ``keypair_policies`` must hold the policy of every pending session's
    access key (a session without one is not scheduled: it gets a
    :class:`SchedulerError`).  ``user_limits``, ``group_limits`` and
    ``domain_limits`` map to total resource slots; a missing entry means no
    limit, and inside an entry a missing slot means zero, so build them with
    :meth:`ResourceSlot.from_policy` (``UNLIMITED`` where a slot the cap does
    not name is not capped, as for domains and projects).  ``dependencies`` holds the state of
    every session some pending session depends on.  ``options`` are per
    resource group (default :data:`~bai.manager.scheduler.options.DEFAULT_OPTIONS`);
    ``roundrobin`` is the last agent the round-robin selector picked per
    resource group, as returned by the previous pass.
    """

    now: datetime
    pending: tuple[PendingSession, ...]
    agents: tuple[AgentInfo, ...]
    keypair_policies: Mapping[AccessKey, KeypairPolicy]
    running: tuple[RunningSession, ...] = ()
    user_limits: Mapping[uuid.UUID, ResourceSlot] = field(default_factory=dict)
    group_limits: Mapping[uuid.UUID, ResourceSlot] = field(default_factory=dict)
    domain_limits: Mapping[str, ResourceSlot] = field(default_factory=dict)
    dependencies: Mapping[SessionId, DependencyState] = field(default_factory=dict)
    options: Mapping[str, SchedulerOptions] = field(default_factory=dict)
    roundrobin: Mapping[str, AgentId] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PredicateFailure:
    """One predicate a session failed: its name and a message for the user.

    ``permanent`` is true when waiting cannot help (a dependency failed or
    was cancelled); the dispatcher may then cancel the session.
    """

    name: str
    msg: str
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class Scheduled:
    """The session starts: ``agents[i]`` is the agent of kernel ``i``."""

    session_id: SessionId
    resource_group: str
    agents: tuple[AgentId, ...]
    passed_predicates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotScheduled:
    """The session stays pending this pass.

    ``reason`` is ``"predicates"`` (some predicate failed, see
    ``failed_predicates``), ``"resources"`` (no placement fits now) or
    ``"blocked"`` (it would fit, but an older FIFO session that does not fit
    holds the queue).  ``retries`` is the new retry count to store.
    """

    session_id: SessionId
    resource_group: str
    reason: Literal["predicates", "resources", "blocked"]
    msg: str
    retries: int
    last_try: datetime
    passed_predicates: tuple[str, ...]
    failed_predicates: tuple[PredicateFailure, ...] = ()

    @property
    def permanent(self) -> bool:
        """Whether a failed predicate says waiting cannot help."""
        return any(failure.permanent for failure in self.failed_predicates)

    def status_data(self) -> dict[str, Any]:
        """Return the JSON stored as the session's ``status_data["scheduler"]``."""
        return {
            "retries": self.retries,
            "last_try": self.last_try.isoformat(),
            "msg": self.msg,
            "passed_predicates": [{"name": name} for name in self.passed_predicates],
            "failed_predicates": [
                {"name": failure.name, "msg": failure.msg} for failure in self.failed_predicates
            ],
        }


@dataclass(frozen=True, slots=True)
class SchedulerError:
    """The session could not be evaluated: its record is malformed, or a bug hit.

    The rest of the pass is unaffected.  ``msg`` says what went wrong.
    """

    session_id: SessionId
    resource_group: str
    msg: str
    last_try: datetime

    def status_data(self) -> dict[str, Any]:
        """Return the JSON stored as the session's ``status_data["scheduler"]``."""
        return {"last_try": self.last_try.isoformat(), "error": self.msg}


Decision = Scheduled | NotScheduled | SchedulerError


@dataclass(frozen=True)
class SchedulingResult:
    """What one pass decided.

    ``decisions`` lists one decision per pending session in the order the
    pass evaluated them (sessions rejected before sequencing come first).
    ``occupied_slots`` and ``container_counts`` give the new values for every
    agent that received kernels; ``allocated_slots`` what each of those agents
    received in this pass (so a dispatcher may also write
    ``occupied = occupied + allocated``).  ``roundrobin`` holds the new
    round-robin cursor of each resource group that moved it.
    ``input_errors`` names agent and running-session records that were
    malformed and left out of the pass.
    """

    decisions: tuple[Decision, ...]
    occupied_slots: Mapping[AgentId, ResourceSlot]
    allocated_slots: Mapping[AgentId, ResourceSlot]
    container_counts: Mapping[AgentId, int]
    roundrobin: Mapping[str, AgentId]
    input_errors: tuple[str, ...] = ()

    @property
    def scheduled(self) -> tuple[Scheduled, ...]:
        """The sessions that start, in the order they were placed."""
        return tuple(d for d in self.decisions if isinstance(d, Scheduled))

    def decision_for(self, session_id: SessionId) -> Decision:
        """Return the decision about one session; :class:`KeyError` if it was not pending."""
        for decision in self.decisions:
            if decision.session_id == session_id:
                return decision
        raise KeyError(session_id)
