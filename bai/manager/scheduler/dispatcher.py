"""The scheduler's I/O: read the queue, run the pure core, write every decision at once.

:class:`Dispatcher` is a Trio service of the manager.  It runs one pass

* whenever :meth:`Dispatcher.trigger` is called (a session was enqueued or
  ended, an agent appeared, gained or lost capacity -- see
  :class:`ScheduleRequests` -- or an operator asked through
  ``POST /manager/scheduler/trigger``),
* whenever another manager asks for a pass with a ``do_schedule`` event
  (a broadcast, so a session enqueued through one manager is placed by
  whichever dispatcher takes the scheduling lock first, without waiting for
  the timer),
* every ``manager.scheduler-interval`` seconds regardless.

Requests coalesce: any number of them during a pass make one more pass after
it, and a dispatcher ignores the ``do_schedule`` its own process sent (it
was triggered directly).

A pass is one read-write transaction: it takes the scheduling lock
(``pg_advisory_xact_lock`` on PostgreSQL, so two managers never schedule at
once, plus a :class:`trio.Lock` inside the process, which on SQLite is the
whole story), reads the pending sessions, the ALIVE agents with their
occupancy derived from kernels (rows locked), the sessions holding resources,
the policies and the resource groups' options, calls
:func:`bai.manager.scheduler.core.schedule`, and writes back in the same
transaction:

* for a placed session, each kernel to SCHEDULED with its agent and its
  occupied slots (through :func:`bai.manager.transitions.transition_kernel`,
  so the session follows to SCHEDULED), and ``status_data["scheduler"]``
  with the passed predicates;
* for a session that stays pending, ``status_data["scheduler"]`` with the
  failed and passed predicates, the retry count and the time of the try;
* a session whose wait cannot succeed (a dependency failed or was
  cancelled) or that waited longer than its resource group's
  ``scheduler_opts.pending_timeout`` seconds is CANCELLED
  (``dependency-failed``, ``pending-timeout``).

After the commit it publishes the transitions' events and sends the ids of
the placed sessions down its *placed* channel, never blocking (the session
registry reads them and starts the sessions).
A dependency in ERROR counts as failed.  A resource group whose scheduler
options are invalid schedules nothing; its sessions carry the configuration
error in ``status_data["scheduler"]`` and the pass goes on for the others.

Operator controls for ``/manager/scheduler/*``: :meth:`Dispatcher.operation`
(``include-agents``/``exclude-agents``) and :meth:`Dispatcher.status`.

:class:`ScheduleRequests` is the manager's
:class:`~bai.manager.protocols.ScheduleRequester`: it triggers this
process's dispatcher (if it runs one) and asks the others on the bus.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
import trio

from bai.common.config import ManagerSection
from bai.common.errors import InvalidValue
from bai.common.events import DoSchedule, Event, EventBus, follow_events, publish_events
from bai.common.slots import ResourceSlot
from bai.common.types import (
    RESOURCE_OCCUPYING_STATUSES,
    AccessKey,
    AgentId,
    ClusterMode,
    InvalidTransition,
    KernelStatus,
    SessionId,
    SessionResult,
    SessionStatus,
)
from bai.manager import transitions
from bai.manager.db import Connection, Database
from bai.manager.errors import AgentNotFound
from bai.manager.models.base import utcnow
from bai.manager.models.identity import domains, groups, keypair_resource_policies, keypairs
from bai.manager.models.resource import AgentStatus, agents, scaling_groups
from bai.manager.models.session import kernels, session_dependencies, sessions
from bai.manager.models.usage import agent_occupancy
from bai.manager.policy import cap_limits, keypair_limits, slot_types_of
from bai.manager.scheduler.core import schedule
from bai.manager.scheduler.options import SchedulerConfigError, SchedulerOptions
from bai.manager.scheduler.types import (
    AgentInfo,
    DependencyState,
    KeypairPolicy,
    NotScheduled,
    PendingSession,
    RunningSession,
    Scheduled,
    SchedulerError,
    SchedulingInput,
)

__all__ = ["SCHEDULER_OPS", "Dispatcher", "PassReport", "ScheduleRequests"]

log = logging.getLogger(__name__)

#: The advisory lock key of scheduling passes (any constant all managers share).
ADVISORY_LOCK_KEY: Final = 0x6261_6953_6368  # "baiSch"
#: The operations :meth:`Dispatcher.operation` accepts.
SCHEDULER_OPS: Final = ("include-agents", "exclude-agents")
_OCCUPYING: Final = sorted(RESOURCE_OCCUPYING_STATUSES)


@dataclass(frozen=True, slots=True)
class PassReport:
    """What one pass did (for ``GET /manager/scheduler/status`` and tests)."""

    started_at: datetime
    duration: float
    pending: int
    scheduled: tuple[SessionId, ...]
    waiting: int
    cancelled: tuple[SessionId, ...]
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "duration": self.duration,
            "pending": self.pending,
            "scheduled": [str(s) for s in self.scheduled],
            "waiting": self.waiting,
            "cancelled": [str(s) for s in self.cancelled],
            "errors": list(self.errors),
        }


@dataclass(slots=True)
class _Read:
    """What a pass read besides the scheduling input."""

    kernel_ids: dict[SessionId, list[uuid.UUID]] = field(default_factory=dict)
    status_data: dict[SessionId, Any] = field(default_factory=dict)
    addrs: dict[str, str] = field(default_factory=dict)
    #: Sessions that waited longer than their resource group's ``pending_timeout``.
    overdue: set[SessionId] = field(default_factory=set)
    config_errors: dict[SessionId, str] = field(default_factory=dict)
    #: ``status_data`` updates to write at the end of the pass.
    notes: list[dict[str, Any]] = field(default_factory=list)

    def with_scheduler(self, sid: SessionId, scheduler_data: Mapping[str, Any]) -> dict[str, Any]:
        """The session's ``status_data`` as the pass read it, with ``scheduler`` replaced."""
        data = dict(self.status_data.get(sid) or {})
        data["scheduler"] = dict(scheduler_data)
        return data


class Dispatcher:
    """The scheduling loop; see the module docstring.

    Built with the manager's ``[manager]`` settings, its database and bus,
    and *placed*, the channel the ids of the sessions each pass placed go
    to.  *engine* picks the core's agent-fit scan (``"cython"``/``"python"``,
    default: the fastest available).  :attr:`origin` is this dispatcher's
    name in the ``do_schedule`` events its process sends.
    """

    def __init__(
        self,
        section: ManagerSection,
        db: Database,
        bus: EventBus,
        placed: trio.MemorySendChannel[tuple[SessionId, ...]],
        *,
        engine: str | None = None,
    ) -> None:
        self._db = db
        self._bus = bus
        self._placed = placed
        self.interval = float(section.scheduler_interval)
        self._engine = engine
        self.origin = uuid.uuid4().hex
        self._wakeup = trio.Event()
        self._lock = trio.Lock()
        self._roundrobin: dict[str, AgentId] = {}
        self._running = False
        self._passes = 0
        self._last: PassReport | None = None

    def trigger(self) -> None:
        """Ask this dispatcher for a pass as soon as possible (never blocks; triggers coalesce)."""
        self._wakeup.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run passes on triggers, ``do_schedule`` events and the timer until cancelled.

        Reports started once it listens to ``do_schedule``.
        """
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                # A lost request is answered by the one pass that overflow triggers.
                await nursery.start(
                    functools.partial(
                        follow_events,
                        self._bus,
                        (DoSchedule,),
                        self._on_request,
                        buffer_size=1024,
                        on_overflow=self.trigger,
                    )
                )
                task_status.started()
                while True:
                    with trio.move_on_after(self.interval):
                        await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    try:
                        await self.run_pass()
                    except Exception:
                        log.exception("a scheduling pass failed")
        finally:
            self._running = False

    async def _on_request(self, request: Event) -> None:
        assert isinstance(request, DoSchedule)
        if request.origin != self.origin:
            self.trigger()

    async def run_pass(self) -> PassReport:
        """Run one pass now (see the module docstring) and return what it did."""
        async with self._lock:
            started = utcnow()
            clock = time.monotonic()
            events: list[Event] = []

            async def run(conn: Connection) -> PassReport:
                events.clear()
                return await self._pass(conn, started, events)

            report = await self._db.transaction(run)
            report = dataclasses.replace(report, duration=time.monotonic() - clock)
            self._passes += 1
            self._last = report
        await publish_events(self._bus, events)
        if report.scheduled:
            self._placed.send_nowait(report.scheduled)
        if report.cancelled:
            # Sessions that depended on the cancelled ones learn of it in the next pass.
            self.trigger()
        return report

    # ---------------------------------------------------------------- the pass

    async def _pass(self, conn: Connection, now: datetime, events: list[Event]) -> PassReport:
        if conn.dialect_name == "postgresql":
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        read = _Read()
        data = await self._read(conn, now, read)
        result = schedule(data, engine=self._engine)
        self._roundrobin.update(result.roundrobin)
        scheduled: list[SessionId] = []
        cancelled: list[SessionId] = []
        waiting = 0
        for decision in result.decisions:
            sid = decision.session_id
            if isinstance(decision, Scheduled):
                await self._place(conn, decision, read, data, events)
                scheduled.append(sid)
                continue
            if isinstance(decision, NotScheduled) and decision.permanent:
                await self._cancel(
                    conn, sid, "dependency-failed", decision.status_data(), read, events
                )
                cancelled.append(sid)
                continue
            if sid in read.overdue:
                scheduler_data = (
                    decision.status_data()
                    if isinstance(decision, NotScheduled | SchedulerError)
                    else {}
                )
                await self._cancel(conn, sid, "pending-timeout", scheduler_data, read, events)
                cancelled.append(sid)
                continue
            waiting += 1
            if isinstance(decision, NotScheduled | SchedulerError):
                self._note(sid, decision.status_data(), read)
        for sid, message in read.config_errors.items():
            waiting += 1
            self._note(sid, {"last_try": now.isoformat(), "error": message}, read)
        if read.notes:
            # Not status changes, so not transitions: only the scheduler's notes, in one go.
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == sa.bindparam("b_id", type_=sessions.c.id.type))
                .values(status_data=sa.bindparam("b_data", type_=sessions.c.status_data.type)),
                read.notes,
            )
        return PassReport(
            started_at=now,
            duration=0.0,
            pending=len(data.pending) + len(read.config_errors),
            scheduled=tuple(scheduled),
            waiting=waiting,
            cancelled=tuple(cancelled),
            errors=tuple(result.input_errors),
        )

    async def _place(
        self,
        conn: Connection,
        decision: Scheduled,
        read: _Read,
        data: SchedulingInput,
        events: list[Event],
    ) -> None:
        sid = decision.session_id
        pending = next(p for p in data.pending if p.id == sid)
        for kernel_id, agent_id, slots in zip(
            read.kernel_ids[sid], decision.agents, pending.kernels, strict=True
        ):
            moved = await transitions.transition_kernel(
                conn,
                kernel_id,
                KernelStatus.SCHEDULED,
                "scheduled",
                values={
                    "agent": agent_id,
                    "agent_addr": read.addrs.get(agent_id),
                    "occupied_slots": slots,
                },
            )
            events.extend(moved.events)
        scheduler_data = {
            "retries": pending.retries,
            "last_try": data.now.isoformat(),
            "msg": "scheduled",
            "passed_predicates": [{"name": name} for name in decision.passed_predicates],
            "failed_predicates": [],
        }
        self._note(sid, scheduler_data, read)

    async def _cancel(
        self,
        conn: Connection,
        sid: SessionId,
        reason: str,
        scheduler_data: Mapping[str, Any],
        read: _Read,
        events: list[Event],
    ) -> None:
        try:
            moved = await transitions.transition_session(
                conn,
                sid,
                SessionStatus.CANCELLED,
                reason,
                status_data=read.with_scheduler(sid, scheduler_data),
                cascade_kernels=True,
            )
        except InvalidTransition:
            return
        events.extend(moved.events)

    @staticmethod
    def _note(sid: SessionId, scheduler_data: Mapping[str, Any], read: _Read) -> None:
        read.notes.append({"b_id": sid, "b_data": read.with_scheduler(sid, scheduler_data)})

    # ---------------------------------------------------------------- reading

    async def _read(self, conn: Connection, now: datetime, read: _Read) -> SchedulingInput:
        agent_rows = (
            await conn.execute(
                sa.select(
                    agents.c.id,
                    agents.c.scaling_group,
                    agents.c.available_slots,
                    agents.c.architecture,
                    agents.c.schedulable,
                    agents.c.addr,
                    agents.c.compute_plugins,
                )
                .where(agents.c.status == AgentStatus.ALIVE.value)
                .order_by(agents.c.id)
            )
        ).all()
        occupancy = await agent_occupancy(conn, [row.id for row in agent_rows], lock=True)
        agent_infos = []
        for row in agent_rows:
            used = occupancy[row.id]
            read.addrs[row.id] = row.addr
            agent_infos.append(
                AgentInfo(
                    id=AgentId(row.id),
                    resource_group=row.scaling_group,
                    available_slots=row.available_slots,
                    occupied_slots=used.occupied_slots,
                    architecture=row.architecture,
                    container_count=used.container_count,
                    schedulable=bool(row.schedulable),
                )
            )
        slot_names = set(
            slot_types_of(
                (row.compute_plugins for row in agent_rows),
                (row.available_slots for row in agent_rows),
            )
        )
        options, group_timeouts, group_errors = await self._group_options(conn)

        pending_rows = (
            await conn.execute(
                sa.select(sessions)
                .where(sessions.c.status == SessionStatus.PENDING.value)
                .order_by(sessions.c.created_at, sessions.c.id)
            )
        ).all()
        pending_ids = [row.id for row in pending_rows]
        kernel_rows = (
            await conn.execute(
                sa.select(kernels.c.id, kernels.c.session_id, kernels.c.requested_slots)
                .where(kernels.c.session_id.in_(pending_ids))
                .order_by(kernels.c.session_id, kernels.c.local_rank, kernels.c.cluster_idx)
            )
        ).all()
        kernel_slots: dict[uuid.UUID, list[ResourceSlot]] = {}
        for krow in kernel_rows:
            read.kernel_ids.setdefault(SessionId(krow.session_id), []).append(krow.id)
            kernel_slots.setdefault(krow.session_id, []).append(krow.requested_slots)
            slot_names.update(krow.requested_slots)
        dependency_rows = (
            await conn.execute(
                sa.select(session_dependencies).where(
                    session_dependencies.c.session_id.in_(pending_ids)
                )
            )
        ).all()
        depends: dict[uuid.UUID, list[SessionId]] = {}
        for drow in dependency_rows:
            depends.setdefault(drow.session_id, []).append(SessionId(drow.depends_on))

        pending: list[PendingSession] = []
        for row in pending_rows:
            sid = SessionId(row.id)
            read.status_data[sid] = row.status_data
            group = row.scaling_group_name or ""
            if group in group_errors:
                read.config_errors[sid] = group_errors[group]
                continue
            limit = group_timeouts.get(group)
            if limit is not None and now - row.created_at > timedelta(seconds=limit):
                read.overdue.add(sid)
            scheduler_data = row.status_data.get("scheduler") if row.status_data else None
            retries = scheduler_data.get("retries", 0) if isinstance(scheduler_data, dict) else 0
            pending.append(
                PendingSession(
                    id=sid,
                    access_key=AccessKey(row.access_key),
                    user_id=row.user_uuid,
                    group_id=row.group_id,
                    domain_name=row.domain_name,
                    resource_group=group,
                    created_at=row.created_at,
                    kernels=tuple(kernel_slots.get(row.id, ())),
                    priority=row.priority,
                    retries=retries if isinstance(retries, int) and retries >= 0 else 0,
                    cluster_mode=ClusterMode(row.cluster_mode),
                    architecture=row.architecture,
                    dependencies=tuple(depends.get(row.id, ())),
                    starts_at=row.starts_at,
                    designated_agent=(
                        AgentId(row.designated_agent) if row.designated_agent else None
                    ),
                )
            )

        running = await self._running_sessions(conn)
        access_keys = sorted({p.access_key for p in pending})
        policies = await self._policies(conn, access_keys, slot_names)
        group_limits, domain_limits = await self._caps(conn, pending, running, slot_names)
        dependencies = await self._dependencies(conn, depends)
        return SchedulingInput(
            now=now,
            pending=tuple(pending),
            agents=tuple(agent_infos),
            keypair_policies=policies,
            running=tuple(running),
            group_limits=group_limits,
            domain_limits=domain_limits,
            dependencies=dependencies,
            options=options,
            roundrobin=dict(self._roundrobin),
        )

    async def _group_options(
        self, conn: Connection
    ) -> tuple[dict[str, SchedulerOptions], dict[str, float], dict[str, str]]:
        options: dict[str, SchedulerOptions] = {}
        timeouts: dict[str, float] = {}
        errors: dict[str, str] = {}
        rows = await conn.execute(
            sa.select(
                scaling_groups.c.name, scaling_groups.c.scheduler, scaling_groups.c.scheduler_opts
            )
        )
        for row in rows:
            try:
                options[row.name] = SchedulerOptions.from_resource_group(
                    row.scheduler, row.scheduler_opts
                )
            except SchedulerConfigError as exc:
                errors[row.name] = f"invalid scheduler configuration of {row.name!r}: {exc}"
                continue
            opts = row.scheduler_opts if isinstance(row.scheduler_opts, Mapping) else {}
            limit = opts.get("pending_timeout")
            if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
                timeouts[row.name] = float(limit)
        return options, timeouts, errors

    async def _running_sessions(self, conn: Connection) -> list[RunningSession]:
        rows = await conn.execute(
            sa.select(
                sessions.c.id,
                sessions.c.access_key,
                sessions.c.user_uuid,
                sessions.c.group_id,
                sessions.c.domain_name,
                sessions.c.scaling_group_name,
                kernels.c.occupied_slots,
                kernels.c.status,
            )
            .select_from(sessions.join(kernels, kernels.c.session_id == sessions.c.id))
            .where(sessions.c.status.in_(_OCCUPYING))
        )
        totals: dict[uuid.UUID, tuple[Any, ResourceSlot]] = {}
        for row in rows:
            slots = row.occupied_slots if row.status in RESOURCE_OCCUPYING_STATUSES else None
            first, total = totals.get(row.id, (row, ResourceSlot()))
            totals[row.id] = (first, total + slots if slots is not None else total)
        return [
            RunningSession(
                id=SessionId(row.id),
                access_key=AccessKey(row.access_key),
                user_id=row.user_uuid,
                group_id=row.group_id,
                domain_name=row.domain_name,
                resource_group=row.scaling_group_name or "",
                occupied_slots=total,
            )
            for row, total in totals.values()
        ]

    async def _policies(
        self, conn: Connection, access_keys: Sequence[str], slot_names: set[str]
    ) -> dict[AccessKey, KeypairPolicy]:
        if not access_keys:
            return {}
        rows = await conn.execute(
            sa.select(keypairs.c.access_key, keypair_resource_policies)
            .select_from(
                keypairs.join(
                    keypair_resource_policies,
                    keypairs.c.resource_policy == keypair_resource_policies.c.name,
                )
            )
            .where(keypairs.c.access_key.in_(list(access_keys)))
        )
        policies: dict[AccessKey, KeypairPolicy] = {}
        for row in rows:
            policies[AccessKey(row.access_key)] = KeypairPolicy(
                total_resource_slots=keypair_limits(
                    row.total_resource_slots, row.default_for_unspecified, slot_names
                ),
                max_concurrent_sessions=row.max_concurrent_sessions,
                max_containers_per_session=row.max_containers_per_session,
                max_pending_session_count=row.max_pending_session_count,
                # An empty limit caps nothing, as no limit does.
                max_pending_session_resource_slots=cap_limits(
                    row.max_pending_session_resource_slots, slot_names
                ),
            )
        return policies

    async def _caps(
        self,
        conn: Connection,
        pending: Sequence[PendingSession],
        running: Sequence[RunningSession],
        slot_names: set[str],
    ) -> tuple[dict[uuid.UUID, ResourceSlot], dict[str, ResourceSlot]]:
        group_ids = sorted({p.group_id for p in pending}, key=str)
        domain_names = sorted({p.domain_name for p in pending})
        group_limits: dict[uuid.UUID, ResourceSlot] = {}
        domain_limits: dict[str, ResourceSlot] = {}
        if group_ids:
            for row in await conn.execute(
                sa.select(groups.c.id, groups.c.total_resource_slots).where(
                    groups.c.id.in_(group_ids)
                )
            ):
                cap = cap_limits(row.total_resource_slots, slot_names)
                if cap is not None:
                    group_limits[row.id] = cap
        if domain_names:
            for row in await conn.execute(
                sa.select(domains.c.name, domains.c.total_resource_slots).where(
                    domains.c.name.in_(domain_names)
                )
            ):
                cap = cap_limits(row.total_resource_slots, slot_names)
                if cap is not None:
                    domain_limits[row.name] = cap
        return group_limits, domain_limits

    async def _dependencies(
        self, conn: Connection, depends: Mapping[uuid.UUID, Sequence[SessionId]]
    ) -> dict[SessionId, DependencyState]:
        wanted = sorted({dep for deps in depends.values() for dep in deps}, key=str)
        if not wanted:
            return {}
        states: dict[SessionId, DependencyState] = {}
        rows = await conn.execute(
            sa.select(sessions.c.id, sessions.c.status, sessions.c.result).where(
                sessions.c.id.in_(wanted)
            )
        )
        for row in rows:
            status = SessionStatus(row.status)
            result = SessionResult(row.result)
            if status is SessionStatus.ERROR:
                # A dependency that failed to run has failed, even before anyone destroys it.
                status, result = SessionStatus.TERMINATED, SessionResult.FAILURE
            states[SessionId(row.id)] = DependencyState(status, result)
        return states

    # -------------------------------------------------------------- operations

    async def operation(self, op: str, agent_ids: Sequence[str]) -> list[str]:
        """Include agents in (or exclude them from) new placements; returns the ids changed.

        *op* is ``include-agents`` or ``exclude-agents``; an excluded agent
        keeps its kernels.  Raises :class:`~bai.common.errors.InvalidValue` for
        an unknown operation or malformed ids and
        :class:`~bai.manager.errors.AgentNotFound` (nothing changed) when an
        id is not registered.
        """
        if op not in SCHEDULER_OPS:
            raise InvalidValue(f"must be one of {', '.join(SCHEDULER_OPS)}", value=op, field="op")
        if isinstance(agent_ids, str) or not all(
            isinstance(a, str) and 0 < len(a) <= 64 for a in agent_ids
        ):
            raise InvalidValue("must be a list of agent ids", value=agent_ids, field="args")
        wanted = sorted(set(agent_ids))
        schedulable = op == "include-agents"

        async def write(conn: Connection) -> list[str]:
            known = set(
                (
                    await conn.execute(sa.select(agents.c.id).where(agents.c.id.in_(wanted)))
                ).scalars()
            )
            missing = [a for a in wanted if a not in known]
            if missing:
                raise AgentNotFound(f"no agent has the id {missing[0]!r}")
            await conn.execute(
                sa.update(agents).where(agents.c.id.in_(wanted)).values(schedulable=schedulable)
            )
            return wanted

        changed = await self._db.transaction(write)
        if schedulable:
            self.trigger()
        return changed

    async def status(self) -> dict[str, Any]:
        """The scheduler's state: whether it runs, its interval, passes, last pass, exclusions."""
        excluded = await self._db.fetch(
            sa.select(agents.c.id).where(agents.c.schedulable.is_(False)).order_by(agents.c.id)
        )
        pending = await self._db.fetch(
            sa.select(sa.func.count()).where(sessions.c.status == SessionStatus.PENDING.value)
        )
        return {
            "running": self._running,
            "interval": self.interval,
            "passes": self._passes,
            "pending_sessions": int(pending.scalar() or 0),
            "excluded_agents": list(excluded.scalars()),
            "last_pass": self._last.to_json() if self._last is not None else None,
        }


class ScheduleRequests:
    """Asks every manager's dispatcher for a pass: a pending session may fit now.

    *local* is this process's dispatcher, triggered at once; the others hear
    ``do_schedule`` (with *local*'s origin, empty without one) on the bus.
    Never raises (see :func:`~bai.common.events.publish_events`).
    """

    def __init__(self, bus: EventBus, local: Dispatcher | None) -> None:
        self._bus = bus
        self._local = local

    async def request_schedule(self) -> None:
        """Ask for a pass; call it after the commit that made a pending session fit."""
        origin = ""
        if self._local is not None:
            self._local.trigger()
            origin = self._local.origin
        await publish_events(self._bus, [DoSchedule(origin=origin)])
