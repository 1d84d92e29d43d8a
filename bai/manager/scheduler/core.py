"""The scheduling core: one pass over the pending sessions, plain data in, decisions out.

:func:`schedule` does no I/O and keeps no state between calls; the
dispatcher reads a :class:`~bai.manager.scheduler.types.SchedulingInput`
from the database, calls it, and writes the
:class:`~bai.manager.scheduler.types.SchedulingResult` back in one
transaction.

A pass, for each resource group in name order:

1. validates each pending session (a malformed one gets a
   :class:`~bai.manager.scheduler.types.SchedulerError`);
2. orders the group's sessions with its sequencer (higher priority first);
3. for each session in turn runs every predicate; a session that passes
   them all is placed all-or-nothing by the group's agent selector, unless
   an earlier FIFO session that could not be placed holds the queue, in
   which case the session only learns whether it would have fit;
4. counts each started session towards agents' free slots and every
   policy's usage at once, so later sessions of the same pass see it.

Guarantees: as many sessions start as fit outside held agents (there is no
per-pass cap); no
agent ends over its capacity in any slot; no limit checked by a predicate is
exceeded by the sessions started; every pending session gets exactly one
decision; an exception while evaluating one session becomes that session's
``SchedulerError`` and the pass goes on; the Cython and Python engines give
equal results.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from bai.common.slots import ResourceSlot
from bai.common.types import AgentId, SessionId
from bai.manager.scheduler.options import DEFAULT_OPTIONS, AgentSelector, SchedulerOptions
from bai.manager.scheduler.predicates import PolicyLedger, run_predicates
from bai.manager.scheduler.selectors import Placement, PlacementTargets, load_engine
from bai.manager.scheduler.sequencers import make_queue
from bai.manager.scheduler.types import (
    AgentInfo,
    Decision,
    InvalidSchedulingInput,
    NotScheduled,
    Scheduled,
    SchedulerError,
    SchedulingInput,
    SchedulingResult,
)
from bai.manager.scheduler.validation import Candidate, prepare

__all__ = ["schedule"]


def _error_message(exc: Exception) -> str:
    if isinstance(exc, InvalidSchedulingInput):
        return f"invalid session record: {exc}"
    return f"scheduler error: {type(exc).__name__}: {exc}"


class _Allocations:
    """What a pass gives each agent: kernels' exact slots and container counts."""

    def __init__(self) -> None:
        self.slots: dict[AgentId, list[ResourceSlot]] = {}

    def add(
        self, targets: PlacementTargets, candidate: Candidate, placement: Placement
    ) -> tuple[AgentId, ...]:
        """Record *placement* and return the agent id of each kernel."""
        agents = tuple(targets.agents[index].id for index in placement.agents)
        for agent_id, requested in zip(agents, candidate.session.kernels, strict=True):
            self.slots.setdefault(agent_id, []).append(requested)
        return agents


def schedule(data: SchedulingInput, *, engine: str | None = None) -> SchedulingResult:
    """Run one scheduling pass over *data* and return every decision.

    *engine* picks the agent-fit scan (``"cython"`` or ``"python"``; default
    :data:`~bai.manager.scheduler.selectors.DEFAULT_ENGINE`); both decide
    identically.  Raises :class:`~bai.manager.scheduler.options.SchedulerConfigError`
    only for an unknown *engine*; everything wrong in *data* is reported in
    the result instead.
    """
    scan = load_engine(engine)
    now = data.now
    decisions: list[Decision] = []
    errors: list[str] = []
    by_group: dict[str, list[Candidate]] = {}
    seen: set[SessionId] = set()
    for session in data.pending:
        # A record that is not even a PendingSession still gets its decision.
        session_id = cast(SessionId, getattr(session, "id", None))
        group: str = getattr(session, "resource_group", "")
        try:
            if session_id in seen:
                raise InvalidSchedulingInput("listed twice", value=session_id, field="id")
            candidate = prepare(session)
        except Exception as exc:
            decisions.append(SchedulerError(session_id, group, _error_message(exc), now))
            continue
        seen.add(candidate.id)
        by_group.setdefault(candidate.session.resource_group, []).append(candidate)

    ledger = PolicyLedger(data, (c for group in by_group.values() for c in group), errors)
    agents_by_group: dict[str, list[AgentInfo]] = {}
    for agent in data.agents:
        agents_by_group.setdefault(getattr(agent, "resource_group", ""), []).append(agent)
    allocations = _Allocations()
    roundrobin: dict[str, AgentId] = {}
    all_targets: list[PlacementTargets] = []

    for group in sorted(by_group):
        options = data.options.get(group, DEFAULT_OPTIONS)
        if not isinstance(options, SchedulerOptions):
            message = f"scheduler options of resource group {group!r} are not SchedulerOptions"
            decisions.extend(SchedulerError(c.id, group, message, now) for c in by_group[group])
            continue
        targets = PlacementTargets(
            group,
            agents_by_group.get(group, []),
            options,
            scan,
            data.roundrobin.get(group),
            errors,
        )
        all_targets.append(targets)
        started = _schedule_group(
            by_group[group], options, targets, ledger, allocations, decisions, now
        )
        if started and options.agent_selector is AgentSelector.ROUNDROBIN:
            roundrobin[group] = targets.agents[targets.roundrobin_after].id

    return _result(decisions, allocations, all_targets, roundrobin, errors)


def _schedule_group(
    candidates: list[Candidate],
    options: SchedulerOptions,
    targets: PlacementTargets,
    ledger: PolicyLedger,
    allocations: _Allocations,
    decisions: list[Decision],
    now: datetime,
) -> bool:
    """Evaluate the sessions of one resource group in sequencer order; True if any started."""
    group = targets.resource_group
    queue = make_queue(
        options, candidates, targets.capacity, ledger.group_user_slots.get(group, {}), now
    )
    blocker: SessionId | None = None
    holding = False
    started = False
    while (item := queue.next()) is not None:
        candidate, exempt = item
        session = candidate.session
        try:
            passed, failed = run_predicates(candidate, ledger)
            if failed:
                decisions.append(
                    NotScheduled(
                        session.id,
                        group,
                        "predicates",
                        "; ".join(f"{f.name}: {f.msg}" for f in failed),
                        session.retries + 1,
                        now,
                        passed,
                        failed,
                    )
                )
                continue
            placement = targets.place(candidate)
            if isinstance(placement, str):
                if (
                    not holding
                    and candidate.id in queue.starving
                    and (held := targets.hold_for(candidate))
                ):
                    holding = True
                    placement += f"; holding {', '.join(held)} for it"
                decisions.append(
                    NotScheduled(
                        session.id, group, "resources", placement, session.retries + 1, now, passed
                    )
                )
                if queue.blocking and not exempt and blocker is None:
                    blocker = session.id
                continue
            if blocker is not None and not exempt:
                targets.release(placement)
                decisions.append(
                    NotScheduled(
                        session.id,
                        group,
                        "blocked",
                        f"waiting behind the older session {blocker} (FIFO head-of-line)",
                        session.retries + 1,
                        now,
                        passed,
                    )
                )
                continue
            try:
                ledger.commit(candidate)
            except BaseException:
                targets.release(placement)
                raise
        except Exception as exc:
            decisions.append(SchedulerError(session.id, group, _error_message(exc), now))
            continue
        queue.placed(candidate)
        started = True
        agents = allocations.add(targets, candidate, placement)
        decisions.append(Scheduled(session.id, group, agents, passed))
    return started


def _result(
    decisions: list[Decision],
    allocations: _Allocations,
    all_targets: Sequence[PlacementTargets],
    roundrobin: dict[str, AgentId],
    errors: list[str],
) -> SchedulingResult:
    agents: dict[AgentId, AgentInfo] = {}
    for targets in all_targets:
        for agent in targets.agents:
            agents[agent.id] = agent
    occupied: dict[AgentId, ResourceSlot] = {}
    allocated: dict[AgentId, ResourceSlot] = {}
    containers: dict[AgentId, int] = {}
    for agent_id, kernels in allocations.slots.items():
        total = sum(kernels, ResourceSlot())
        agent = agents[agent_id]
        allocated[agent_id] = total
        occupied[agent_id] = agent.occupied_slots + total
        containers[agent_id] = agent.container_count + len(kernels)
    return SchedulingResult(
        decisions=tuple(decisions),
        occupied_slots=occupied,
        allocated_slots=allocated,
        container_counts=containers,
        roundrobin=roundrobin,
        input_errors=tuple(errors),
    )
