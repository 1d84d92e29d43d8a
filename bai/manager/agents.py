"""The manager's side of its agents: RPC clients, heartbeats, liveness.

:class:`AgentPool` is one Trio service of the manager (``await
nursery.start(pool.serve)``).  It

* listens to every agent's ``agent_started``, ``agent_heartbeat`` and
  ``agent_terminated`` events (a broadcast subscription, so every manager
  process sees every agent) and keeps the ``agents`` table in step: a
  heartbeat inserts or updates the agent's row (status ALIVE, RPC address,
  region, resource group, architecture, capacity, compute plugins) and
  registers the images its catalog announces in the ``images`` table (a name
  and architecture that already exist, and aliases already taken, are left
  alone).  A heartbeat identical to the last one written causes no write;
* declares an agent LOST when no heartbeat came for ``manager.heartbeat-timeout``
  seconds while this process was reading the bus (counted from this
  process's start for an agent it never heard from, and from the end of the
  manager's own bus outage: a silence it could not have heard proves
  nothing, and after an outage every agent gets a full timeout to be heard
  again; see :func:`silent_too_long`).  In the same transaction the agent's
  kernels move on through :mod:`bai.manager.transitions` with reason
  ``agent-lost``: TERMINATING ones to TERMINATED and those not started yet
  to ERROR, so their sessions end and free their slots at once (occupancy
  is derived from kernels), while started ones become RUNNING_DEGRADED and
  wait ``manager.lost-agent-grace`` seconds for their agent.  An agent
  heard again within that grace gets them back: the sync below returns each
  kernel the agent still has to RUNNING and ends the others.  When the grace
  runs out they end as ERROR (``agent-lost``), and an agent that comes back
  later has them destroyed as strays;
* treats an agent that announced its own shutdown (``agent_terminated``) the
  same way after a grace period in which the agent's own
  ``agent_kernel_terminated`` reports normally arrive first (reason
  ``agent-terminated`` for what is left);
* when it first hears from an agent (or the agent restarted), reconciles
  the two views with the agent's ``sync_kernel_registry``: kernels the
  manager believes alive there but the agent does not have are reported
  ended by the agent (``agent_kernel_terminated``), and kernels the agent
  runs that the database does not know as alive are destroyed
  (``not-found-in-manager``).  A sync the agent or the database failed is
  run again at the agent's next heartbeat;
* after that sync, checks each heartbeat's ``kernel_statuses`` (the kernels
  the agent has) against the agent's RUNNING kernels in the database, for
  the case where the agent's ``agent_kernel_terminated`` report was lost:
  when two heartbeats in a row lack a kernel, the sync runs again and the
  agent reports that kernel's end anew, so its session ends and its slots
  are freed within a heartbeat or two;
* asks every manager for a scheduling pass (:func:`request_schedule`) when
  an agent's capacity appears or disappears;
* keeps one :class:`~bai.common.rpc.RPCClient` per agent address for
  :meth:`AgentPool.call`, the only way the manager talks to agents.

Guarantees: every wait on an agent is bounded by the caller's timeout or
``manager.rpc-timeout``; a malformed heartbeat is logged and ignored, never
fatal; an agent whose resource group does not exist is not registered (and
so never receives kernels), with an error in the log; events are published
only after the transaction that caused them committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
import trio

from bai.common.errors import BaiError, InvalidValue
from bai.common.events import (
    AgentHeartbeat,
    AgentStarted,
    AgentTerminated,
    BusReadHealth,
    DoSchedule,
    Event,
    EventBus,
    EventBusError,
    follow_events,
)
from bai.common.rpc import RemoteError, RPCClient, RPCConnectionError, RPCError, RPCTimeout
from bai.common.slots import ResourceSlot
from bai.common.types import AgentId, InvalidTransition, KernelStatus
from bai.manager.db import UNAVAILABLE_ERRORS, Connection
from bai.manager.models.base import utcnow
from bai.manager.models.image import image_aliases, images
from bai.manager.models.resource import AgentStatus, agents, scaling_groups
from bai.manager.models.session import kernels
from bai.manager.transitions import KernelNotFound, transition_kernel

if TYPE_CHECKING:
    from bai.manager.context import ManagerContext

__all__ = [
    "LIVE_KERNEL_STATUSES",
    "STARTED_KERNEL_STATUSES",
    "AgentNotFound",
    "AgentPool",
    "AgentUnavailable",
    "publish_events",
    "request_schedule",
    "silent_too_long",
]

log = logging.getLogger(__name__)

#: How long publishing one event may take before it is given up (logged).
PUBLISH_TIMEOUT: Final = 5.0
#: Kernel statuses an agent has (or is creating) the kernel in.
LIVE_KERNEL_STATUSES: Final = frozenset(
    {
        KernelStatus.SCHEDULED,
        KernelStatus.PREPARING,
        KernelStatus.PULLING,
        KernelStatus.PREPARED,
        KernelStatus.CREATING,
        KernelStatus.RUNNING,
        KernelStatus.RESTARTING,
        KernelStatus.RUNNING_DEGRADED,
        KernelStatus.TERMINATING,
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
#: Kernel statuses checked against heartbeats: the kernel must exist on its agent.
REPORTED_KERNEL_STATUSES: Final = frozenset({KernelStatus.RUNNING, KernelStatus.RUNNING_DEGRADED})
#: Kernel statuses in a heartbeat that mean the agent no longer has the kernel.
_ENDED_KERNEL_STATUSES: Final = frozenset(
    {KernelStatus.TERMINATED.value, KernelStatus.ERROR.value, KernelStatus.CANCELLED.value}
)
#: Seconds an agent that announced its shutdown has to report its kernels ended.
SHUTDOWN_GRACE: Final = 5.0
#: Kernel statuses that a LOST agent's kernels keep (degraded) while it may come back.
_WAITING_KERNEL_STATUSES: Final = frozenset(
    {KernelStatus.RUNNING, KernelStatus.RESTARTING, KernelStatus.RUNNING_DEGRADED}
)
_SYNC_TIMEOUT_FLOOR: Final = 5.0


class AgentNotFound(BaiError, LookupError):
    """No agent with that id is registered."""

    http_status = 404
    error_type = "agent-not-found"


class AgentUnavailable(BaiError):
    """The agent cannot be reached: not alive, not answering in time, or the connection broke."""

    http_status = 503
    error_type = "agent-unavailable"


async def publish_events(bus: EventBus, events: Iterable[Event]) -> None:
    """Publish *events* in order, each bounded by :data:`PUBLISH_TIMEOUT`.

    Meant for the events a committed transaction returned: a bus failure is
    logged, never raised, because the database already holds the truth.
    """
    for event in events:
        with trio.move_on_after(PUBLISH_TIMEOUT) as scope:
            try:
                await bus.publish(event)
            except (EventBusError, trio.ClosedResourceError) as exc:
                log.warning("could not publish %s: %s", event.name, exc)
        if scope.cancelled_caught:
            log.warning("publishing %s timed out", event.name)


async def request_schedule(ctx: ManagerContext) -> None:
    """Ask every manager's dispatcher for a pass: a pending session may fit now.

    This process's dispatcher (if it runs one) is triggered at once; the
    others hear ``do_schedule`` on the bus.  Call it after the commit that
    enqueued a session or freed or added capacity, so that the pass it causes
    sees the change.  Never raises (see :func:`publish_events`).
    """
    dispatcher = ctx._dispatcher
    origin = ""
    if dispatcher is not None:
        dispatcher.trigger()
        origin = dispatcher.origin
    await publish_events(ctx.bus, [DoSchedule(origin=origin)])


def silent_too_long(last_heard: float, health: BusReadHealth | None, timeout: float) -> bool:
    """Whether an agent last heard at *last_heard* was silent for *timeout* seconds of evidence.

    Only a stretch in which the manager read its bus without a failure
    counts, from the later of *last_heard* and the start of the current run of
    successful reads up to the latest of them (*health*, ``None`` while reads
    fail).  So a manager that cannot read its bus never blames the agents,
    and after it recovers every agent has a full *timeout* to be heard.
    """
    if health is None:
        return False
    return health.last - max(last_heard, health.since) > timeout


@dataclass(frozen=True, slots=True)
class _Beat:
    """What a heartbeat says about an agent, in the form the agents row stores."""

    addr: str
    public_host: str | None
    region: str
    scaling_group: str
    architecture: str
    version: str
    available_slots: ResourceSlot
    compute_plugins: str  # canonical JSON text, so that equal reports compare equal
    images: tuple[Mapping[str, Any], ...]
    images_digest: str
    # The kernels the agent has and has not ended; None from an agent that does not say.
    live_kernels: frozenset[uuid.UUID] | None

    def row(self) -> dict[str, Any]:
        return {
            "addr": self.addr,
            "public_host": self.public_host,
            "region": self.region,
            "scaling_group": self.scaling_group,
            "architecture": self.architecture,
            "version": self.version,
            "available_slots": self.available_slots,
            "compute_plugins": json.loads(self.compute_plugins),
        }

    def same_row(self, other: _Beat) -> bool:
        return self.row() == other.row()


def _text(info: Mapping[str, Any], key: str, *, default: str | None = None, limit: int) -> str:
    value = info.get(key, default)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidValue(f"must be a non-empty string of at most {limit} characters", value=value)
    return value


def _parse_beat(info: Mapping[str, Any]) -> _Beat:
    """Read an ``agent_info`` map; :class:`InvalidValue` names the bad key."""
    if not isinstance(info, Mapping):
        raise InvalidValue("agent_info must be a map", value=info)
    try:
        key = "addr"
        addr = _text(info, key, limit=128)
        key = "region"
        region = _text(info, key, default="local", limit=64)
        key = "scaling_group"
        group = _text(info, key, default="default", limit=64)
        key = "architecture"
        arch = _text(info, key, default="x86_64", limit=32)
        key = "version"
        version = str(info.get("version", ""))[:64]
        key = "public_host"
        public_host = info.get("public_host")
        if public_host is not None and (not isinstance(public_host, str) or len(public_host) > 256):
            raise InvalidValue("must be a host name", value=public_host)
        key = "available_slots"
        slots = ResourceSlot.from_json(info.get("available_slots", {}))
        key = "compute_plugins"
        plugins = info.get("compute_plugins", {})
        if not isinstance(plugins, Mapping):
            raise InvalidValue("must be a map", value=plugins)
        plugins_text = json.dumps(plugins, sort_keys=True, default=str)
        key = "images"
        raw_images = info.get("images", [])
        if not isinstance(raw_images, list):
            raise InvalidValue("must be a list", value=raw_images)
        image_list = tuple(i for i in raw_images if isinstance(i, Mapping))
        digest = hashlib.sha256(
            json.dumps(raw_images, sort_keys=True, default=str).encode()
        ).hexdigest()
        key = "kernel_statuses"
        live_kernels = _live_kernels(info.get(key))
    except InvalidValue as exc:
        raise InvalidValue(exc.problem, value=exc.value, field=f"agent_info.{key}") from None
    return _Beat(
        addr=addr,
        public_host=public_host,
        region=region,
        scaling_group=group,
        architecture=arch,
        version=version,
        available_slots=slots,
        compute_plugins=plugins_text,
        images=image_list,
        images_digest=digest,
        live_kernels=live_kernels,
    )


def _live_kernels(statuses: object) -> frozenset[uuid.UUID] | None:
    """The ids of a heartbeat's ``kernel_statuses`` whose status is not an end."""
    if statuses is None:
        return None
    if not isinstance(statuses, Mapping):
        raise InvalidValue("must be a map", value=statuses)
    live: set[uuid.UUID] = set()
    for kid, status in statuses.items():
        if status in _ENDED_KERNEL_STATUSES:
            continue
        try:
            live.add(uuid.UUID(str(kid)))
        except ValueError:
            raise InvalidValue("must be keyed by kernel ids", value=kid) from None
    return frozenset(live)


def _split_image_name(name: str) -> tuple[str, str, str]:
    """``registry``, ``image`` and ``tag`` of an image reference (``local`` when no registry)."""
    path, tag = name, "latest"
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        path, tag = name[:colon], name[colon + 1 :]
    first, _, rest = path.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return "local", path, tag


@dataclass(slots=True)
class _Client:
    addr: str
    client: RPCClient
    scope: trio.CancelScope


def _agent_events_overflowed() -> None:
    # Heartbeats repeat: missing a few only delays an update.
    log.warning("agent events came faster than they were handled")


class AgentPool:
    """Agents as the manager sees them; see the module docstring.

    Built with the manager's :class:`~bai.manager.context.ManagerContext`
    (its ``config``, ``db``, ``bus``; a pass of every manager's dispatcher is
    requested whenever capacity appears or disappears).
    """

    def __init__(self, ctx: ManagerContext) -> None:
        self._ctx = ctx
        self._db = ctx.db
        self._bus = ctx.bus
        section = ctx.config.manager
        self.heartbeat_timeout = float(section.heartbeat_timeout)
        self.lost_agent_grace = float(section.lost_agent_grace)
        self.rpc_timeout = float(section.rpc_timeout)
        self._last_seen: dict[str, float] = {}
        self._written: dict[str, _Beat] = {}
        self._images_seen: dict[str, str] = {}
        self._synced: set[str] = set()
        # Running kernels the agent's latest heartbeat lacked, by agent.
        self._absent: dict[str, set[uuid.UUID]] = {}
        self._bad_groups: set[tuple[str, str]] = set()
        self._clients: dict[str, _Client] = {}
        self._client_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._started_at = 0.0

    # ------------------------------------------------------------------ service

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: heartbeat handling, the LOST checker and the RPC clients."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._follow, nursery.cancel_scope)
                self._nursery = nursery
                self._started_at = trio.current_time()
                nursery.start_soon(self._check_liveness)
                task_status.started()
        finally:
            self._nursery = None

    async def _follow(
        self, pool_scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            await follow_events(
                self._bus,
                (AgentHeartbeat, AgentStarted, AgentTerminated),
                self._on_event,
                buffer_size=10_000,
                on_overflow=_agent_events_overflowed,
                task_status=task_status,
            )
        finally:
            # The bus ended the subscription: the pool stops with it.
            pool_scope.cancel()

    async def _on_event(self, event: Event) -> None:
        try:
            await self._handle_event(event)
        except Exception:
            log.exception("handling %s failed", event.name)

    async def _handle_event(self, event: Event) -> None:
        if isinstance(event, AgentHeartbeat):
            await self.handle_heartbeat(event.agent_id, event.agent_info)
        elif isinstance(event, AgentStarted):
            # The agent (re)started: what it runs may have changed behind our back.
            self._synced.discard(event.agent_id)
            self._written.pop(event.agent_id, None)
            self._absent.pop(event.agent_id, None)
        elif isinstance(event, AgentTerminated) and event.reason != "agent-lost":
            await self._mark(event.agent_id, AgentStatus.TERMINATED)

    # --------------------------------------------------------------- heartbeats

    async def handle_heartbeat(self, agent_id: str, info: Mapping[str, Any]) -> None:
        """Register or refresh *agent_id* from its ``agent_info`` (see the module docstring)."""
        try:
            if not isinstance(agent_id, str) or not 0 < len(agent_id) <= 64:
                raise InvalidValue("must be 1 to 64 characters", value=agent_id, field="agent_id")
            beat = _parse_beat(info)
        except InvalidValue as exc:
            log.warning("ignoring a malformed heartbeat of agent %r: %s", agent_id, exc)
            return
        self._last_seen[agent_id] = trio.current_time()
        previous = self._written.get(agent_id)
        row_changed = previous is None or not previous.same_row(beat)
        images_changed = self._images_seen.get(agent_id) != beat.images_digest
        if row_changed or images_changed:
            if not await self._register(agent_id, beat, row=row_changed, images=images_changed):
                return
            self._written[agent_id] = beat
            self._images_seen[agent_id] = beat.images_digest
            if previous is None or previous.available_slots != beat.available_slots:
                await request_schedule(self._ctx)
        if agent_id in self._synced:
            if beat.live_kernels is not None:
                await self._repair_kernels(agent_id, beat.live_kernels)
        elif self._nursery is not None:
            self._synced.add(agent_id)
            self._nursery.start_soon(self._sync_kernels, agent_id)

    async def _register(self, agent_id: str, beat: _Beat, *, row: bool, images: bool) -> bool:
        """Write the agent's row as ALIVE and its images, in one transaction.

        The images are there as soon as the agent is, so a session asking for
        one never races the agent's registration.  Returns False (nothing
        written) if the agent's resource group does not exist.
        """

        async def write(conn: Connection) -> bool:
            group = await conn.scalar(
                sa.select(scaling_groups.c.name).where(scaling_groups.c.name == beat.scaling_group)
            )
            if group is None:
                return False
            if images:
                await _register_images(conn, beat.images)
            if row:
                await _upsert_agent(conn, agent_id, beat)
            return True

        try:
            registered = await self._db.transaction(write)
        except sa.exc.IntegrityError:
            # Another manager inserted the same agent or image first; now they exist.
            registered = await self._db.transaction(write)
        key = (agent_id, beat.scaling_group)
        if not registered:
            if key not in self._bad_groups:
                self._bad_groups.add(key)
                log.error(
                    "agent %s belongs to resource group %r, which does not exist; "
                    "it will not receive kernels until the group is created",
                    agent_id,
                    beat.scaling_group,
                )
            return False
        self._bad_groups.discard(key)
        return True

    def _notify(self, session_ids: Iterable[uuid.UUID]) -> None:
        registry = self._ctx._registry
        if registry is not None:
            registry.notify(session_ids)

    # ----------------------------------------------------------------- liveness

    async def _check_liveness(self) -> None:
        period = min(max(self.heartbeat_timeout / 4, 0.1), 5.0)
        while True:
            await trio.sleep(period)
            try:
                await self.check_liveness()
            except Exception:
                log.exception("the agent liveness check failed")

    async def check_liveness(self) -> list[str]:
        """Declare LOST every ALIVE agent silent for ``heartbeat-timeout``; return their ids.

        Silent as :func:`silent_too_long` judges it, from this bus's read health.

        Also ends the leftover kernels of agents that shut down more than
        :data:`SHUTDOWN_GRACE` seconds ago, or were declared LOST more than
        ``lost-agent-grace`` seconds ago.
        """
        alive = await self._db.fetch(sa.select(agents.c.id).where(agents.c.status == "ALIVE"))
        alive_ids = set(alive.scalars())
        for agent_id in list(self._written):
            if agent_id not in alive_ids:
                # Declared lost or terminated elsewhere: the next heartbeat revives it.
                del self._written[agent_id]
        lost: list[str] = []
        for agent_id in sorted(alive_ids):
            last = self._last_seen.get(agent_id, self._started_at)
            silent = silent_too_long(last, self._bus.read_health(), self.heartbeat_timeout)
            if silent and await self._mark(agent_id, AgentStatus.LOST):
                lost.append(agent_id)
        await self._reap_departed()
        return lost

    async def mark_lost(self, agent_id: str) -> bool:
        """Declare *agent_id* LOST now (as the checker would); False if it was not ALIVE."""
        return await self._mark(agent_id, AgentStatus.LOST)

    async def _mark(self, agent_id: str, status: AgentStatus) -> bool:
        events: list[Event] = []
        touched: set[uuid.UUID] = set()

        async def write(conn: Connection) -> bool:
            events.clear()
            touched.clear()
            row = (
                await conn.execute(
                    sa.select(agents.c.status).where(agents.c.id == agent_id).with_for_update()
                )
            ).first()
            if row is None or AgentStatus(row.status) is not AgentStatus.ALIVE:
                return False
            now = utcnow()
            values: dict[str, Any] = {"status": status, "status_changed": now}
            if status is AgentStatus.LOST:
                values["lost_at"] = now
            await conn.execute(sa.update(agents).where(agents.c.id == agent_id).values(values))
            if status is AgentStatus.LOST:
                events.extend(await _strand_kernels_of(conn, agent_id, touched))
            return True

        changed = await self._db.transaction(write)
        self._written.pop(agent_id, None)
        self._synced.discard(agent_id)
        self._absent.pop(agent_id, None)
        if not changed:
            return False
        log.warning("agent %s is %s", agent_id, status.value)
        if status is AgentStatus.LOST:
            events.append(AgentTerminated(agent_id=AgentId(agent_id), reason="agent-lost"))
        await publish_events(self._bus, events)
        self._notify(touched)
        await self._close_client(agent_id)
        await request_schedule(self._ctx)
        return True

    async def _reap_departed(self) -> None:
        """End the kernels still alive on agents that shut down or were lost a while ago."""
        now = utcnow()
        departed_long_ago = sa.or_(
            sa.and_(
                agents.c.status == AgentStatus.TERMINATED.value,
                agents.c.status_changed < now - timedelta(seconds=SHUTDOWN_GRACE),
            ),
            sa.and_(
                agents.c.status == AgentStatus.LOST.value,
                agents.c.status_changed < now - timedelta(seconds=self.lost_agent_grace),
            ),
        )
        rows = await self._db.fetch(
            sa.select(kernels.c.agent)
            .distinct()
            .select_from(kernels.join(agents, kernels.c.agent == agents.c.id))
            .where(
                departed_long_ago,
                kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
            )
        )
        departed = rows.scalars()
        if not departed:
            return
        events: list[Event] = []
        touched: set[uuid.UUID] = set()

        async def write(conn: Connection) -> None:
            events.clear()
            touched.clear()
            # Again under the row locks: an agent heard meanwhile is ALIVE again.
            states = await conn.execute(
                sa.select(agents.c.id, agents.c.status)
                .where(agents.c.id.in_(departed), departed_long_ago)
                .with_for_update()
            )
            for state in states:
                lost = state.status == AgentStatus.LOST
                reason = "agent-lost" if lost else "agent-terminated"
                events.extend(await _end_kernels_of(conn, [state.id], reason, touched))

        await self._db.transaction(write)
        await publish_events(self._bus, events)
        self._notify(touched)
        if events:
            await request_schedule(self._ctx)

    # ------------------------------------------------------------ kernel sync

    def resync(self, agent_id: str) -> None:
        """Reconcile *agent_id*'s kernels again at its next heartbeat.

        For a caller that could not destroy a kernel there: the sync destroys
        every kernel the agent runs that the database does not have alive.
        """
        self._synced.discard(agent_id)

    async def _sync_kernels(self, agent_id: str) -> None:
        """Reconcile what the agent runs with what the database says (see the module docs).

        When the agent or the database fails on the way, the agent's next
        heartbeat starts over.
        """
        timeout = max(self.rpc_timeout, _SYNC_TIMEOUT_FLOOR)
        try:
            strays, present = await self._compare(agent_id, timeout)
            await self._restore_kernels(agent_id, present)
        except (
            AgentUnavailable,
            AgentNotFound,
            RemoteError,
            AttributeError,  # the agent's report was not a map
            *UNAVAILABLE_ERRORS,
        ) as exc:
            log.warning("could not reconcile the kernels of agent %s: %s", agent_id, exc)
            self.resync(agent_id)
            return
        for kid in strays:
            log.warning("agent %s runs kernel %s that the manager does not know", agent_id, kid)
            try:
                await self.call(
                    agent_id,
                    "destroy_kernel",
                    {"kernel_id": kid, "reason": "not-found-in-manager"},
                    timeout=timeout,
                )
            except (AgentUnavailable, AgentNotFound, RemoteError, *UNAVAILABLE_ERRORS) as exc:
                log.warning("could not destroy kernel %s on agent %s: %s", kid, agent_id, exc)
                self.resync(agent_id)

    async def _repair_kernels(self, agent_id: str, live: frozenset[uuid.UUID]) -> None:
        """Reconcile *agent_id* again when this heartbeat and the one before lack a running kernel.

        The heartbeats only raise the suspicion: they may have been sent
        before a kernel was created and read after.  The sync asks the agent
        itself, which reports the kernels it does not have through
        ``agent_kernel_terminated`` (with the real reason and exit code of a
        kernel it still remembers), so a late copy of a lost report, or
        another manager doing the same, changes nothing.
        """
        rows = await self._db.fetch(
            sa.select(kernels.c.id).where(
                kernels.c.agent == agent_id,
                kernels.c.status.in_(sorted(s.value for s in REPORTED_KERNEL_STATUSES)),
            )
        )
        absent = {kid for kid in rows.scalars() if kid not in live}
        gone = absent & self._absent.get(agent_id, set())
        if gone and self._nursery is not None:
            log.warning(
                "agent %s no longer reports kernels %s; reconciling",
                agent_id,
                ", ".join(sorted(str(kid) for kid in gone)),
            )
            # Two more heartbeats before the next try: the sync's reports take a moment.
            absent.clear()
            self._nursery.start_soon(self._sync_kernels, agent_id)
        self._absent[agent_id] = absent

    async def _compare(self, agent_id: str, limit: float) -> tuple[list[str], set[uuid.UUID]]:
        """What *agent_id* runs against what the database has started there.

        Returns the kernels the agent runs that the database does not have
        alive (strays, to destroy) and the started kernels the agent still
        has.  The agent reports those it lacks itself.  *limit* bounds the
        agent's answer, in seconds.
        """
        rows = await self._db.fetch(
            sa.select(kernels.c.id, kernels.c.session_id).where(
                kernels.c.agent == agent_id,
                kernels.c.status.in_(sorted(s.value for s in STARTED_KERNEL_STATUSES)),
            )
        )
        listed = [[str(row.id), str(row.session_id)] for row in rows]
        report = await self.call(
            agent_id, "sync_kernel_registry", {"kernels": listed}, timeout=limit
        )
        missing = {str(k) for k in report.get("missing", [])}
        present = {row.id for row in rows if str(row.id) not in missing}
        unknown = [str(k) for k in report.get("unknown", [])]
        if not unknown:
            return [], present
        ids = []
        for text in unknown:
            try:
                ids.append(uuid.UUID(text))
            except ValueError:
                continue
        # Checked after the call: a kernel created meanwhile is known by now.
        known = await self._db.fetch(
            sa.select(kernels.c.id).where(
                kernels.c.id.in_(ids),
                kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
            )
        )
        keep = {str(kid) for kid in known.scalars()}
        return [kid for kid in unknown if kid not in keep], present

    async def _restore_kernels(self, agent_id: str, present: set[uuid.UUID]) -> None:
        """Return to RUNNING the kernels degraded by *agent_id*'s loss that it still has."""
        if not present:
            return
        events: list[Event] = []
        touched: set[uuid.UUID] = set()

        async def write(conn: Connection) -> None:
            events.clear()
            touched.clear()
            alive = await conn.scalar(
                sa.select(agents.c.id)
                .where(agents.c.id == agent_id, agents.c.status == AgentStatus.ALIVE.value)
                .with_for_update()
            )
            if alive is None:
                return
            rows = await conn.execute(
                sa.select(kernels.c.id, kernels.c.session_id).where(
                    kernels.c.id.in_(sorted(present)),
                    kernels.c.agent == agent_id,
                    kernels.c.status == KernelStatus.RUNNING_DEGRADED.value,
                    kernels.c.status_info == "agent-lost",
                )
            )
            for row in rows:
                try:
                    result = await transition_kernel(
                        conn, row.id, KernelStatus.RUNNING, "agent-returned"
                    )
                except (InvalidTransition, KernelNotFound):
                    continue
                touched.add(row.session_id)
                events.extend(result.events)

        await self._db.transaction(write)
        if touched:
            log.warning("agent %s is back: %d of its sessions go on", agent_id, len(touched))
        await publish_events(self._bus, events)
        self._notify(touched)

    # --------------------------------------------------------------------- RPC

    async def call(
        self,
        agent_id: str,
        method: str,
        args: Any = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - each call's deadline is the contract
    ) -> Any:
        """Call *method* on *agent_id* and return its result.

        *timeout* defaults to ``manager.rpc-timeout``.  Raises
        :class:`AgentNotFound` for an agent the database does not know,
        :class:`AgentUnavailable` when the agent is not ALIVE, does not answer
        in time or the connection broke, and
        :class:`~bai.common.rpc.RemoteError` for an error the agent answered.
        """
        client = await self._client(agent_id)
        limit = self.rpc_timeout if timeout is None else timeout
        try:
            return await client.call(method, args, timeout=limit)
        except RPCTimeout as exc:
            raise AgentUnavailable(f"agent {agent_id} did not answer {method}: {exc}") from None
        except RPCConnectionError as exc:
            raise AgentUnavailable(f"agent {agent_id}: {exc}") from None
        except RemoteError:
            raise
        except RPCError as exc:
            raise AgentUnavailable(f"agent {agent_id} answered {method} badly: {exc}") from None

    async def _client(self, agent_id: str) -> RPCClient:
        entry = self._clients.get(agent_id)
        beat = self._written.get(agent_id)
        if entry is not None and (beat is None or beat.addr == entry.addr):
            return entry.client
        row = (
            await self._db.fetch(
                sa.select(agents.c.addr, agents.c.status).where(agents.c.id == agent_id)
            )
        ).first()
        if row is None:
            raise AgentNotFound(f"no agent has the id {agent_id!r}")
        if AgentStatus(row.status) is not AgentStatus.ALIVE:
            raise AgentUnavailable(f"agent {agent_id} is {row.status}")
        async with self._client_lock:
            entry = self._clients.get(agent_id)
            if entry is not None and entry.addr == row.addr:
                return entry.client
            if entry is not None:
                entry.scope.cancel()
                del self._clients[agent_id]
            nursery = self._nursery
            if nursery is None:
                raise AgentUnavailable("the agent pool is not running")
            try:
                new: _Client = await nursery.start(self._run_client, agent_id, row.addr)
            except InvalidValue as exc:
                raise AgentUnavailable(f"agent {agent_id} has an unusable address: {exc}") from None
            return new.client

    async def _run_client(
        self, agent_id: str, addr: str, *, task_status: trio.TaskStatus[_Client]
    ) -> None:
        with trio.CancelScope() as scope:
            async with RPCClient(addr, timeout=self.rpc_timeout) as client:
                entry = _Client(addr, client, scope)
                self._clients[agent_id] = entry
                task_status.started(entry)
                try:
                    await trio.sleep_forever()
                finally:
                    if self._clients.get(agent_id) is entry:
                        del self._clients[agent_id]

    async def _close_client(self, agent_id: str) -> None:
        async with self._client_lock:
            entry = self._clients.pop(agent_id, None)
            if entry is not None:
                entry.scope.cancel()


async def _upsert_agent(conn: Connection, agent_id: str, beat: _Beat) -> None:
    values = beat.row()
    row = (
        await conn.execute(
            sa.select(agents.c.status).where(agents.c.id == agent_id).with_for_update()
        )
    ).first()
    now = utcnow()
    if row is None:
        await conn.execute(
            sa.insert(agents).values(
                id=agent_id,
                status=AgentStatus.ALIVE,
                status_changed=now,
                first_contact=now,
                **values,
            )
        )
        return
    if AgentStatus(row.status) is not AgentStatus.ALIVE:
        values.update(status=AgentStatus.ALIVE, status_changed=now, lost_at=None)
    await conn.execute(sa.update(agents).where(agents.c.id == agent_id).values(values))


async def _register_images(conn: Connection, image_list: Sequence[Mapping[str, Any]]) -> None:
    """Insert the announced images (and free aliases) the ``images`` table lacks."""
    for entry in image_list:
        name = entry.get("name")
        arch = entry.get("architecture")
        if not isinstance(name, str) or not isinstance(arch, str):
            continue
        if not 0 < len(name) <= 512 or not 0 < len(arch) <= 32:
            continue
        image_id = await conn.scalar(
            sa.select(images.c.id).where(images.c.name == name, images.c.architecture == arch)
        )
        if image_id is None:
            registry, path, tag = _split_image_name(name)
            labels = entry.get("labels")
            resources = entry.get("resources")
            image_id = uuid.uuid4()
            await conn.execute(
                sa.insert(images).values(
                    id=image_id,
                    name=name,
                    registry=registry[:256],
                    image=path[:256],
                    tag=tag[:128],
                    architecture=arch,
                    labels=labels if isinstance(labels, Mapping) else {},
                    resources=resources if isinstance(resources, Mapping) else {},
                )
            )
        aliases = entry.get("aliases")
        for alias in aliases if isinstance(aliases, list) else []:
            if not isinstance(alias, str) or not 0 < len(alias) <= 256:
                continue
            taken = await conn.scalar(
                sa.select(image_aliases.c.alias).where(image_aliases.c.alias == alias)
            )
            if taken is None:
                await conn.execute(sa.insert(image_aliases).values(alias=alias, image_id=image_id))


async def _end_kernels_of(
    conn: Connection, agent_ids: Sequence[str], reason: str, touched: set[uuid.UUID]
) -> list[Event]:
    """Move every live kernel on *agent_ids* on (TERMINATING -> TERMINATED, others -> ERROR).

    Adds the ids of the sessions concerned to *touched*.
    """
    rows = await conn.execute(
        sa.select(kernels.c.id, kernels.c.session_id, kernels.c.status)
        .where(
            kernels.c.agent.in_(list(agent_ids)),
            kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
        )
        .order_by(kernels.c.session_id, kernels.c.id)
    )
    events: list[Event] = []
    for row in rows:
        status = KernelStatus(row.status)
        target = (
            KernelStatus.TERMINATED if status is KernelStatus.TERMINATING else KernelStatus.ERROR
        )
        try:
            result = await transition_kernel(conn, row.id, target, reason)
        except (InvalidTransition, KernelNotFound):
            continue
        touched.add(row.session_id)
        events.extend(result.events)
    return events


async def _strand_kernels_of(
    conn: Connection, agent_id: str, touched: set[uuid.UUID]
) -> list[Event]:
    """Move the kernels of an agent just declared LOST on (see the module docstring).

    Started kernels become RUNNING_DEGRADED, to wait for their agent; the
    others end as :func:`_end_kernels_of` ends them.  Adds the ids of the
    sessions concerned to *touched*.
    """
    rows = await conn.execute(
        sa.select(kernels.c.id, kernels.c.session_id, kernels.c.status)
        .where(
            kernels.c.agent == agent_id,
            kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
        )
        .order_by(kernels.c.session_id, kernels.c.id)
    )
    events: list[Event] = []
    for row in rows:
        status = KernelStatus(row.status)
        if status is KernelStatus.RUNNING_DEGRADED:
            continue
        if status in _WAITING_KERNEL_STATUSES:
            target = KernelStatus.RUNNING_DEGRADED
        elif status is KernelStatus.TERMINATING:
            target = KernelStatus.TERMINATED
        else:
            target = KernelStatus.ERROR
        try:
            result = await transition_kernel(conn, row.id, target, "agent-lost")
        except (InvalidTransition, KernelNotFound):
            continue
        touched.add(row.session_id)
        events.extend(result.events)
    return events
