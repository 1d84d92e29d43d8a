"""Checking scheduler input records and preparing pending sessions for a pass.

The core validates every record it reads, so a malformed row becomes a clear
error about that row instead of an exception that stops the pass.  The same
checks serve the API at enqueue time: :func:`validate_pending` and
:func:`check_satisfiable` raise :class:`~bai.manager.scheduler.types.InvalidSchedulingInput`
subclasses whose messages name the field and the value.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from bai.common.slots import ResourceSlot
from bai.common.types import ClusterMode, SessionId
from bai.manager.scheduler.types import (
    AgentInfo,
    InvalidSchedulingInput,
    KeypairPolicy,
    PendingSession,
    RunningSession,
)

__all__ = [
    "MAX_CLUSTER_SIZE",
    "MAX_PRIORITY",
    "Candidate",
    "UnsatisfiableRequest",
    "check_satisfiable",
    "clear_shape_cache",
    "normalize_architecture",
    "prepare",
    "to_milli",
    "validate_agent",
    "validate_pending",
    "validate_policy",
    "validate_running",
]

#: Priorities run from 0 (lowest) to this (highest).
MAX_PRIORITY: Final = 100
#: The most kernels one session may have.
MAX_CLUSTER_SIZE: Final = 1024
_ARCH_ALIASES: Final = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}

#: An amount in thousandths of a unit, or ``±inf``.
Milli = int | float


class UnsatisfiableRequest(InvalidSchedulingInput):
    """A session asks for something no agent of its resource group can ever give."""


def normalize_architecture(name: str) -> str:
    """Return the canonical name of a CPU architecture (``amd64`` → ``x86_64``)."""
    lowered = name.lower()
    return _ARCH_ALIASES.get(lowered, lowered)


def to_milli(slots: ResourceSlot) -> dict[str, Milli]:
    """Return *slots* as exact thousandths (``±inf`` for infinite amounts), in a new dict."""
    return dict(_milli_items(slots))


def clear_shape_cache() -> None:
    """Forget the remembered slot conversions (benchmarks measure a cold start with it)."""
    _milli_items.cache_clear()


# Sessions ask for the same few shapes again and again (presets), and every
# pass converts every pending session: remembering recent shapes halves a
# pass.  Equal ResourceSlots may differ only in zero slots, which count as
# missing everywhere the scheduler reads these amounts.
@functools.lru_cache(maxsize=8192)
def _milli_items(slots: ResourceSlot) -> tuple[tuple[str, Milli], ...]:
    out: list[tuple[str, Milli]] = []
    for key, text in slots.to_json().items():
        if text.endswith("Infinity"):
            out.append((key, -math.inf if text.startswith("-") else math.inf))
        elif "." in text:
            out.append((key, int(Decimal(text).scaleb(3))))
        else:
            out.append((key, int(text) * 1000))
    return tuple(out)


@dataclass(slots=True)
class Candidate:
    """A validated pending session with what the pass computes from it once."""

    session: PendingSession
    total: ResourceSlot
    kernel_milli: tuple[dict[str, Milli], ...]
    total_milli: dict[str, Milli]
    architecture: str

    @property
    def id(self) -> SessionId:
        """The session's id."""
        return self.session.id


def _fail(problem: str, value: object, field: str) -> InvalidSchedulingInput:
    return InvalidSchedulingInput(problem, value=value, field=field)


def _check_uuid(value: object, field: str) -> None:
    if not isinstance(value, uuid.UUID):
        raise _fail("must be a UUID", value, field)


def _check_name(value: object, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise _fail("must be a non-empty string", value, field)


def _check_aware(value: object, field: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise _fail("must be a timezone-aware datetime", value, field)


def _check_count(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail("must be a non-negative integer", value, field)


def _check_amounts(slots: object, field: str, *, allow_infinity: bool = False) -> dict[str, Milli]:
    """Return *slots* in thousandths after checking every amount is >= 0 (and finite)."""
    if not isinstance(slots, ResourceSlot):
        raise _fail("must be a ResourceSlot", slots, field)
    milli = to_milli(slots)
    for key, amount in milli.items():
        if amount < 0 or (isinstance(amount, float) and not allow_infinity):
            problem = "must not be negative" if allow_infinity else "must be finite and >= 0"
            raise _fail(problem, str(slots[key]), f"{field}.{key}")
    return milli


def _check_owner(session: PendingSession | RunningSession) -> None:
    """Check the id of a session and who owns it where (the fields both kinds share)."""
    _check_uuid(session.id, "id")
    _check_name(session.access_key, "access_key")
    _check_uuid(session.user_id, "user_id")
    _check_uuid(session.group_id, "group_id")
    _check_name(session.domain_name, "domain_name")
    _check_name(session.resource_group, "resource_group")


def validate_pending(session: PendingSession) -> None:
    """Raise :class:`InvalidSchedulingInput` unless *session* is well-formed.

    Checks types, a priority within 0–100, timezone-aware times, 1 to
    :data:`MAX_CLUSTER_SIZE` kernels each requesting finite non-negative
    amounts, and a multi-node or single-node cluster mode.
    """
    _check_fields(session)
    _check_kernels(session.kernels)


def _check_fields(session: PendingSession) -> None:
    """Check everything of a pending session but its kernels."""
    if not isinstance(session, PendingSession):
        raise _fail("must be a PendingSession", session, "session")
    _check_owner(session)
    _check_aware(session.created_at, "created_at")
    priority = session.priority
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _fail("must be an integer", priority, "priority")
    if not 0 <= priority <= MAX_PRIORITY:
        raise _fail(f"must be between 0 and {MAX_PRIORITY}", priority, "priority")
    _check_count(session.retries, "retries")
    if not isinstance(session.cluster_mode, ClusterMode):
        raise _fail("must be a ClusterMode", session.cluster_mode, "cluster_mode")
    _check_name(session.architecture, "architecture")
    if not isinstance(session.dependencies, tuple):
        raise _fail("must be a tuple of session ids", session.dependencies, "dependencies")
    for dependency in session.dependencies:
        _check_uuid(dependency, "dependencies")
    if session.starts_at is not None:
        _check_aware(session.starts_at, "starts_at")
    if session.designated_agent is not None:
        _check_name(session.designated_agent, "designated_agent")


def _check_kernels(kernels: object) -> tuple[dict[str, Milli], ...]:
    if not isinstance(kernels, tuple) or not 1 <= len(kernels) <= MAX_CLUSTER_SIZE:
        raise _fail(f"must be a tuple of 1 to {MAX_CLUSTER_SIZE} ResourceSlots", kernels, "kernels")
    return tuple(
        _check_amounts(requested, f"kernels[{index}]") for index, requested in enumerate(kernels)
    )


def prepare(session: PendingSession) -> Candidate:
    """Validate *session* and compute its total request once for the whole pass."""
    _check_fields(session)
    kernel_milli = _check_kernels(session.kernels)
    total_milli: dict[str, Milli] = {}
    for milli in kernel_milli:
        for key, amount in milli.items():
            total_milli[key] = total_milli.get(key, 0) + amount
    return Candidate(
        session=session,
        total=sum(session.kernels, ResourceSlot()),
        kernel_milli=kernel_milli,
        total_milli=total_milli,
        architecture=normalize_architecture(session.architecture),
    )


def validate_agent(agent: AgentInfo) -> tuple[dict[str, Milli], dict[str, Milli]]:
    """Return the agent's capacity and free slots in thousandths, or raise if malformed.

    Capacity must be non-negative (infinity allowed); occupied slots must be
    finite.  Free slots may be negative when the agent is over-allocated: such
    an agent receives nothing until it is back within capacity.
    """
    if not isinstance(agent, AgentInfo):
        raise _fail("must be an AgentInfo", agent, "agent")
    _check_name(agent.id, "id")
    _check_name(agent.resource_group, "resource_group")
    _check_name(agent.architecture, "architecture")
    _check_count(agent.container_count, "container_count")
    if not isinstance(agent.schedulable, bool):
        raise _fail("must be a bool", agent.schedulable, "schedulable")
    capacity = _check_amounts(agent.available_slots, "available_slots", allow_infinity=True)
    free = dict(capacity)
    for key, amount in _check_amounts(agent.occupied_slots, "occupied_slots").items():
        free[key] = free.get(key, 0) - amount
    return capacity, free


def validate_running(session: RunningSession) -> None:
    """Raise :class:`InvalidSchedulingInput` unless *session* is well-formed."""
    if not isinstance(session, RunningSession):
        raise _fail("must be a RunningSession", session, "running session")
    _check_owner(session)
    _check_amounts(session.occupied_slots, "occupied_slots")


def validate_policy(policy: object) -> KeypairPolicy:
    """Return *policy* if it is a well-formed :class:`KeypairPolicy`, else raise."""
    if not isinstance(policy, KeypairPolicy):
        raise _fail("must be a KeypairPolicy", policy, "keypair policy")
    _check_amounts(policy.total_resource_slots, "total_resource_slots", allow_infinity=True)
    for name in (
        "max_concurrent_sessions",
        "max_containers_per_session",
        "max_pending_session_count",
    ):
        value = getattr(policy, name)
        if value is not None:
            _check_count(value, name)
    if policy.max_pending_session_resource_slots is not None:
        _check_amounts(
            policy.max_pending_session_resource_slots,
            "max_pending_session_resource_slots",
            allow_infinity=True,
        )
    return policy


def check_satisfiable(session: PendingSession, agents: Sequence[AgentInfo]) -> None:
    """Raise :class:`UnsatisfiableRequest` if no agent of the session's group could ever host it.

    Looks at capacity, not at current load: a session is unsatisfiable when
    it requests a slot no agent of its resource group (with its architecture)
    has, or when a kernel (a single-node session: the whole session) exceeds
    the capacity of every such agent.  Meant for the API at enqueue time.
    """
    validate_pending(session)
    arch = normalize_architecture(session.architecture)
    hosts = [
        agent
        for agent in agents
        if agent.resource_group == session.resource_group
        and normalize_architecture(agent.architecture) == arch
    ]
    group = f"resource group {session.resource_group!r}"
    if not hosts:
        raise UnsatisfiableRequest(
            f"no agent with architecture {arch!r} in {group}",
            value=session.architecture,
            field="architecture",
        )
    provided: set[str] = set()
    for agent in hosts:
        provided.update(key for key, amount in agent.available_slots.items() if amount > 0)
    for index, requested in enumerate(session.kernels):
        for key, amount in requested.items():
            if amount > 0 and key not in provided:
                raise UnsatisfiableRequest(
                    f"no agent in {group} provides this slot", value=key, field=f"kernels[{index}]"
                )
    if session.cluster_mode is ClusterMode.SINGLE_NODE:
        units: Mapping[str, ResourceSlot] = {"the session": sum(session.kernels, ResourceSlot())}
    else:
        units = {f"kernel {i}": slots for i, slots in enumerate(session.kernels)}
    for name, requested in units.items():
        if not any(requested.fits_in(agent.available_slots) for agent in hosts):
            raise UnsatisfiableRequest(
                f"{name} needs more than any agent in {group} has",
                value=requested.to_json(),
                field="kernels",
            )
