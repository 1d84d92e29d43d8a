"""``bai manager``: the manager's composition root and root nursery.

:func:`build_services` is the one place the manager's services are built and
wired to each other: each takes only the narrow protocols of
:mod:`bai.manager.protocols` it needs, and the dispatcher hands the sessions
it placed to the session registry over a Trio memory channel, so no service
imports another.

:class:`ManagerService` runs the manager's parts as one Trio service:

1. the database (``[db]``: SQLite file or PostgreSQL), upgraded to the newest
   schema unless told otherwise;
2. the event bus (``[redis] type``: Redis Streams, or an in-process bus, or
   one the caller passes in, as ``bai up`` does to share it with its agent);
3. the :class:`~bai.manager.agents.AgentPool`,
   :class:`~bai.manager.sessions.registry.SessionRegistry` and
   :class:`~bai.manager.scheduler.dispatcher.Dispatcher` of
   :func:`build_services`, attached to one
   :class:`~bai.manager.context.ManagerContext` and started in that order,
   then the :class:`~bai.manager.bgtask.BackgroundTasks` routes start and
   the :class:`~bai.manager.idle.IdleChecker` that ends idle sessions and
   the :class:`~bai.manager.livestats.LiveStats` the agents' samples fill,
   and the :class:`~bai.manager.callbacks.SessionCallbacks` that call each
   session's ``callback_url``;
   ``ctx.storage`` (:class:`~bai.manager.vfolders.proxies.StorageProxies`)
   runs no task and is closed after everything else stopped;
4. the REST API (:func:`bai.manager.api.app.serve_api`) on
   ``manager.service-addr``.

``await nursery.start(service.serve)`` returns a :class:`ManagerHandle` (the
context and the API's base URLs) once everything answers.  Cancelling
``serve`` stops every service at once and closes the event bus and the
database only after each of them has finished its cleanup.

:func:`main` is the ``bai manager --config manager.toml`` process: it runs the
service until SIGINT or SIGTERM and exits 0 (2 for a bad config).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import trio

from bai.common.config import ManagerConfig
from bai.common.daemon import run_daemon
from bai.common.events import EventBus, running_event_bus
from bai.common.types import SessionId
from bai.manager.agents import AgentPool
from bai.manager.appproxy import EndedSessionRoutes, app_last_use
from bai.manager.bgtask import BackgroundTasks
from bai.manager.callbacks import SessionCallbacks
from bai.manager.context import ManagerContext
from bai.manager.db import Database, create_database
from bai.manager.idle import IdleChecker
from bai.manager.livestats import LiveStats
from bai.manager.models import migrate
from bai.manager.scheduler.dispatcher import Dispatcher, ScheduleRequests
from bai.manager.sessions.registry import SessionRegistry
from bai.manager.sessions.state import Waiters
from bai.manager.vfolders.proxies import StorageProxies

__all__ = ["ManagerHandle", "ManagerService", "build_services", "main"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ManagerHandle:
    """A running manager: its context and the base URLs its API answers on."""

    ctx: ManagerContext
    urls: tuple[str, ...]


def build_services(
    config: ManagerConfig, db: Database, bus: EventBus, *, dispatcher: bool = True
) -> ManagerContext:
    """The manager's services, wired to each other and attached to a new context; none runs yet.

    Without *dispatcher* the process schedules nothing itself: its requests
    for a pass go to the other managers through the bus only.
    """
    section = config.manager
    placed_send, placed_receive = trio.open_memory_channel[tuple[SessionId, ...]](math.inf)
    local = Dispatcher(section, db, bus, placed_send) if dispatcher else None
    schedule = ScheduleRequests(bus, local)
    waiters = Waiters()
    ctx = ManagerContext(config=config, db=db, bus=bus)
    ctx.agents = AgentPool(section, db, bus, schedule=schedule, waiters=waiters)
    ctx.registry = SessionRegistry(
        section,
        db,
        bus,
        agents=ctx.agents,
        schedule=schedule,
        waiters=waiters,
        placed=placed_receive,
    )
    if local is not None:
        ctx.dispatcher = local
    # Opens no connection until a route calls a proxy; ManagerService.serve closes it.
    ctx.storage = StorageProxies(db)
    ctx.bgtasks = BackgroundTasks(bus)
    ctx.livestats = LiveStats(bus)
    registry = ctx.registry
    ctx.idle = IdleChecker(
        db,
        lambda session_id, reason: registry.destroy_session(session_id, reason=reason),
        app_use=functools.partial(app_last_use, db),
        kernel_stats=ctx.livestats.kernels,
    )
    return ctx


class ManagerService:
    """The manager; see the module docstring.

    *bus* replaces the ``[redis]`` bus and *database* the ``[db]`` database
    (the caller runs and opens them); *upgrade_schema* runs the migrations at
    start; *serve_api* can be turned off to run the lifecycle services alone
    (tests, tools).
    """

    def __init__(
        self,
        config: ManagerConfig,
        *,
        bus: EventBus | None = None,
        database: Database | None = None,
        upgrade_schema: bool = True,
        serve_api: bool = True,
    ) -> None:
        self.config = config
        self._bus = bus
        self._database = database
        self._upgrade = upgrade_schema
        self._serve_api = serve_api

    async def serve(
        self, *, task_status: trio.TaskStatus[ManagerHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the manager until cancelled; report a :class:`ManagerHandle` once it serves."""
        config = self.config
        async with AsyncExitStack() as stack:
            db = self._database
            if db is None:
                db = await stack.enter_async_context(create_database(config.db))
            if self._upgrade:
                await migrate.upgrade(db)
            bus = self._bus
            if bus is None:
                # Outside the services' nursery: they still use the bus while they stop.
                bus = await stack.enter_async_context(running_event_bus(config.redis))
            ctx = build_services(config, db, bus)
            # After the services' nursery: the API may still call a proxy while it stops.
            stack.push_async_callback(_shielded(ctx.storage.aclose))
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.agents.serve)
                await nursery.start(ctx.registry.serve)
                await nursery.start(ctx.dispatcher.serve)
                await nursery.start(ctx.bgtasks.serve)
                await nursery.start(ctx.idle.serve)
                await nursery.start(ctx.livestats.serve)
                await nursery.start(EndedSessionRoutes(db, bus).serve)
                await nursery.start(SessionCallbacks(db, bus).serve)
                urls: list[str] = []
                if self._serve_api:
                    from bai.manager.api.app import serve_api

                    urls = await nursery.start(serve_api, ctx)
                log.info("manager %s is up%s", config.manager.id, f" at {urls[0]}" if urls else "")
                task_status.started(ManagerHandle(ctx, tuple(urls)))


def _shielded(close: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        with trio.CancelScope(shield=True):
            await close()

    return run


async def _start(config: ManagerConfig, nursery: trio.Nursery) -> None:
    await nursery.start(ManagerService(config).serve)


def main(config_path: Path | None) -> int:
    """Run ``bai manager`` until a signal; returns the process exit code."""
    return run_daemon(
        "manager",
        ManagerConfig,
        config_path,
        start=_start,
        logging_of=lambda config: config.logging,
        pid_file_of=lambda config: config.manager.pid_file,
    )
