"""Predicates: the policy checks a pending session must pass before placement.

:data:`PREDICATES` runs in a fixed order, and every predicate runs for every
session so that the user sees all reasons at once.  Each has a stable name
(stored in ``status_data.scheduler.passed_predicates`` and
``failed_predicates``) and returns a human message when it fails.

A :class:`PolicyLedger` holds, for one pass, what every keypair, user,
group and domain uses (from the running sessions, plus every session the
pass has started so far), so no limit is exceeded by sessions started in
the same pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from bai.common.slots import ResourceSlot
from bai.common.types import AccessKey, SessionId, SessionResult, SessionStatus
from bai.manager.scheduler.types import (
    DependencyState,
    InvalidSchedulingInput,
    KeypairPolicy,
    PredicateFailure,
    SchedulingInput,
)
from bai.manager.scheduler.validation import Candidate, validate_policy, validate_running

__all__ = [
    "PREDICATES",
    "PolicyLedger",
    "Predicate",
    "run_predicates",
]


class PolicyLedger:
    """Resource usage by keypair, user, group and domain during one pass.

    Built from the input's running sessions (malformed ones are left out and
    described in *errors*); :meth:`commit` adds a session the pass starts.
    """

    def __init__(
        self, data: SchedulingInput, candidates: Iterable[Candidate], errors: list[str]
    ) -> None:
        self.now = data.now
        self.dependencies: Mapping[SessionId, DependencyState] = data.dependencies
        self._policies = data.keypair_policies
        self._checked_policies: dict[AccessKey, KeypairPolicy] = {}
        self.user_limits = data.user_limits
        self.group_limits = data.group_limits
        self.domain_limits = data.domain_limits
        self.keypair_slots: dict[AccessKey, ResourceSlot] = {}
        self.keypair_sessions: dict[AccessKey, int] = {}
        self.user_slots: dict[uuid.UUID, ResourceSlot] = {}
        self.group_slots: dict[uuid.UUID, ResourceSlot] = {}
        self.domain_slots: dict[str, ResourceSlot] = {}
        #: Per resource group, per user: what the user's sessions hold there (for DRF).
        self.group_user_slots: dict[str, dict[uuid.UUID, ResourceSlot]] = {}
        for running in data.running:
            try:
                validate_running(running)
            except Exception as exc:
                name = getattr(running, "id", running)
                errors.append(f"running session {name} left out: {exc}")
                continue
            self._add(
                running.access_key,
                running.user_id,
                running.group_id,
                running.domain_name,
                running.resource_group,
                running.occupied_slots,
            )
        # Each pending session's place in its keypair's queue (oldest first) and
        # what it and the older ones request, for the pending-queue limits.
        self.pending_rank: dict[SessionId, tuple[int, ResourceSlot]] = {}
        by_keypair: dict[AccessKey, list[Candidate]] = {}
        for candidate in candidates:
            by_keypair.setdefault(candidate.session.access_key, []).append(candidate)
        for queue in by_keypair.values():
            queue.sort(key=lambda c: (c.session.created_at, c.session.id))
            requested = ResourceSlot()
            for rank, candidate in enumerate(queue, start=1):
                requested = requested + candidate.total
                self.pending_rank[candidate.id] = (rank, requested)

    def policy(self, access_key: AccessKey) -> KeypairPolicy:
        """Return the keypair's policy; :class:`InvalidSchedulingInput` if missing or malformed."""
        policy = self._checked_policies.get(access_key)
        if policy is None:
            if access_key not in self._policies:
                raise InvalidSchedulingInput(
                    "no keypair resource policy for this access key",
                    value=access_key,
                    field="keypair_policies",
                )
            policy = validate_policy(self._policies[access_key])
            self._checked_policies[access_key] = policy
        return policy

    def commit(self, candidate: Candidate) -> None:
        """Count a session the pass starts towards every usage it affects."""
        session = candidate.session
        self._add(
            session.access_key,
            session.user_id,
            session.group_id,
            session.domain_name,
            session.resource_group,
            candidate.total,
        )

    def _add(
        self,
        access_key: AccessKey,
        user_id: uuid.UUID,
        group_id: uuid.UUID,
        domain_name: str,
        resource_group: str,
        slots: ResourceSlot,
    ) -> None:
        empty = ResourceSlot()
        # Compute every new value before storing any, so a failure changes nothing.
        keypair = self.keypair_slots.get(access_key, empty) + slots
        user = self.user_slots.get(user_id, empty) + slots
        group = self.group_slots.get(group_id, empty) + slots
        domain = self.domain_slots.get(domain_name, empty) + slots
        users_here = self.group_user_slots.setdefault(resource_group, {})
        user_here = users_here.get(user_id, empty) + slots
        self.keypair_slots[access_key] = keypair
        self.keypair_sessions[access_key] = self.keypair_sessions.get(access_key, 0) + 1
        self.user_slots[user_id] = user
        self.group_slots[group_id] = group
        self.domain_slots[domain_name] = domain
        users_here[user_id] = user_here


Check = Callable[[Candidate, PolicyLedger], PredicateFailure | None]


@dataclass(frozen=True, slots=True)
class Predicate:
    """A named check; ``check`` returns a failure or ``None`` when the session passes."""

    name: str
    check: Check


def _over_limit(used: ResourceSlot, requested: ResourceSlot, limit: ResourceSlot) -> str | None:
    """Describe the slots where *used* + *requested* exceeds *limit*, or None if it fits."""
    total = used + requested
    if total.fits_in(limit):
        return None
    parts = []
    for key in sorted(set(total) | set(limit)):
        if total.get(key, 0) > limit.get(key, 0):
            parts.append(
                f"{key} (using {used.get(key, 0)}, requesting {requested.get(key, 0)}, "
                f"limit {limit.get(key, 0)})"
            )
    return ", ".join(parts)


def _reserved_time(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    starts_at = candidate.session.starts_at
    if starts_at is None or starts_at <= ledger.now:
        return None
    return PredicateFailure(RESERVED_TIME, f"reserved to start at {starts_at.isoformat()}")


def _dependencies(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    waiting: list[str] = []
    for dependency in candidate.session.dependencies:
        state = ledger.dependencies.get(dependency)
        if state is None:
            return PredicateFailure(
                DEPENDENCIES, f"dependency {dependency} does not exist", permanent=True
            )
        if state.status is SessionStatus.TERMINATED and state.result is SessionResult.SUCCESS:
            continue
        if state.status in (SessionStatus.TERMINATED, SessionStatus.CANCELLED):
            outcome = "CANCELLED" if state.status is SessionStatus.CANCELLED else "without success"
            return PredicateFailure(
                DEPENDENCIES,
                f"dependency {dependency} ended {outcome}; this session can never start",
                permanent=True,
            )
        waiting.append(str(dependency))
    if not waiting:
        return None
    return PredicateFailure(
        DEPENDENCIES, f"waiting for dependencies to finish successfully: {', '.join(waiting)}"
    )


def _concurrency(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    access_key = candidate.session.access_key
    limit = ledger.policy(access_key).max_concurrent_sessions
    running = ledger.keypair_sessions.get(access_key, 0)
    if limit is None or running < limit:
        return None
    return PredicateFailure(
        CONCURRENCY,
        f"the keypair already has {running} sessions; "
        f"its limit (max_concurrent_sessions) is {limit}",
    )


def _pending_count(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    limit = ledger.policy(candidate.session.access_key).max_pending_session_count
    rank, _ = ledger.pending_rank[candidate.id]
    if limit is None or rank <= limit:
        return None
    return PredicateFailure(
        PENDING_SESSION_COUNT_LIMIT,
        f"{rank - 1} older sessions of the keypair are pending; only the oldest {limit} "
        "pending sessions may start (max_pending_session_count)",
    )


def _pending_resources(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    limit = ledger.policy(candidate.session.access_key).max_pending_session_resource_slots
    if limit is None:
        return None
    _, requested = ledger.pending_rank[candidate.id]
    excess = _over_limit(ResourceSlot(), requested, limit)
    if excess is None:
        return None
    return PredicateFailure(
        PENDING_SESSION_RESOURCE_LIMIT,
        "this and the older pending sessions of the keypair request more than "
        f"max_pending_session_resource_slots allows: {excess}",
    )


def _keypair_resources(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    access_key = candidate.session.access_key
    return _total_limit(
        KEYPAIR_RESOURCE_LIMIT,
        "keypair",
        ledger.policy(access_key).total_resource_slots,
        ledger.keypair_slots.get(access_key),
        candidate,
    )


def _user_resources(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    user_id = candidate.session.user_id
    return _total_limit(
        USER_RESOURCE_LIMIT,
        "user",
        ledger.user_limits.get(user_id),
        ledger.user_slots.get(user_id),
        candidate,
    )


def _group_resources(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    group_id = candidate.session.group_id
    return _total_limit(
        GROUP_RESOURCE_LIMIT,
        "project",
        ledger.group_limits.get(group_id),
        ledger.group_slots.get(group_id),
        candidate,
    )


def _domain_resources(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    domain = candidate.session.domain_name
    return _total_limit(
        DOMAIN_RESOURCE_LIMIT,
        "domain",
        ledger.domain_limits.get(domain),
        ledger.domain_slots.get(domain),
        candidate,
    )


def _total_limit(
    name: str,
    owner: str,
    limit: ResourceSlot | None,
    used: ResourceSlot | None,
    candidate: Candidate,
) -> PredicateFailure | None:
    if limit is None:
        return None
    if not isinstance(limit, ResourceSlot):
        raise InvalidSchedulingInput(
            f"the {owner} resource limit must be a ResourceSlot", value=limit, field=name
        )
    excess = _over_limit(used or ResourceSlot(), candidate.total, limit)
    if excess is None:
        return None
    return PredicateFailure(name, f"{owner} resource limit exceeded: {excess}")


def _containers(candidate: Candidate, ledger: PolicyLedger) -> PredicateFailure | None:
    limit = ledger.policy(candidate.session.access_key).max_containers_per_session
    size = candidate.session.cluster_size
    if limit is None or size <= limit:
        return None
    return PredicateFailure(
        MAX_CONTAINERS_PER_SESSION,
        f"the session has {size} kernels; the keypair policy allows {limit} per session "
        "(max_containers_per_session)",
    )


RESERVED_TIME: Final = "reserved_time"
DEPENDENCIES: Final = "dependencies"
CONCURRENCY: Final = "concurrency"
PENDING_SESSION_COUNT_LIMIT: Final = "pending_session_count_limit"
PENDING_SESSION_RESOURCE_LIMIT: Final = "pending_session_resource_limit"
KEYPAIR_RESOURCE_LIMIT: Final = "keypair_resource_limit"
USER_RESOURCE_LIMIT: Final = "user_resource_limit"
GROUP_RESOURCE_LIMIT: Final = "user_group_resource_limit"
DOMAIN_RESOURCE_LIMIT: Final = "domain_resource_limit"
MAX_CONTAINERS_PER_SESSION: Final = "max_containers_per_session"

#: Every predicate, in the order they run.
PREDICATES: Final[tuple[Predicate, ...]] = (
    Predicate(RESERVED_TIME, _reserved_time),
    Predicate(DEPENDENCIES, _dependencies),
    Predicate(CONCURRENCY, _concurrency),
    Predicate(PENDING_SESSION_COUNT_LIMIT, _pending_count),
    Predicate(PENDING_SESSION_RESOURCE_LIMIT, _pending_resources),
    Predicate(KEYPAIR_RESOURCE_LIMIT, _keypair_resources),
    Predicate(USER_RESOURCE_LIMIT, _user_resources),
    Predicate(GROUP_RESOURCE_LIMIT, _group_resources),
    Predicate(DOMAIN_RESOURCE_LIMIT, _domain_resources),
    Predicate(MAX_CONTAINERS_PER_SESSION, _containers),
)


def run_predicates(
    candidate: Candidate, ledger: PolicyLedger
) -> tuple[tuple[str, ...], tuple[PredicateFailure, ...]]:
    """Run every predicate; return the names that passed and the failures, in order."""
    passed: list[str] = []
    failed: list[PredicateFailure] = []
    for predicate in PREDICATES:
        failure = predicate.check(candidate, ledger)
        if failure is None:
            passed.append(predicate.name)
        else:
            failed.append(failure)
    return tuple(passed), tuple(failed)
