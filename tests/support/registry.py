"""Shared harness of the registry, dispatcher and embedded tests: a real manager and agents.

Imported by the ``test_registry_*`` and ``test_dispatcher_*`` modules (it
holds no tests itself).  :func:`running_cluster` starts the manager's
lifecycle services (:class:`~bai.manager.server.ManagerService` without the
HTTP API) on a scratch database seeded with the default fixture, and real
agents with local kernels: on an in-process bus with ``inproc://`` RPC, or on
Redis Streams with ``ipc://`` RPC as separate processes would use them.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import trio

from bai.agent.server import AgentService
from bai.common.config import AgentConfig, ManagerConfig, parse_config
from bai.common.events import EventBus, InProcEventBus
from bai.common.slots import ResourceSlot
from bai.common.types import SessionStatus
from bai.manager.context import ManagerContext
from bai.manager.db import Database, create_database
from bai.manager.fixtures import default_fixture, populate
from bai.manager.models import agents, keypairs
from bai.manager.server import ManagerHandle, ManagerService
from bai.manager.sessions.model import SessionInfo, SessionRequest
from bai.manager.sessions.registry import SessionRegistry

from support.agent import Events, agent_config

USER_EMAIL = "user@lablup.com"
ADMIN_EMAIL = "admin@lablup.com"


MANAGER_DEFAULTS = {
    "heartbeat-timeout": "30s",
    "rpc-timeout": "10s",
    "kernel-creation-timeout": "30s",
    "kernel-termination-timeout": "10s",
    "scheduler-interval": "1s",
}


def manager_config(overrides: dict[str, str | int] | None = None) -> ManagerConfig:
    """A manager config with short deadlines; *overrides* replace ``[manager]`` keys."""
    section = {**MANAGER_DEFAULTS, **(overrides or {})}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in section.items())
    return parse_config(ManagerConfig, f"[manager]\n{lines}\n")


@dataclass
class _Manager:
    """A manager service the test can stop on its own, its agents and database left running."""

    handle: ManagerHandle
    scope: trio.CancelScope
    stopped: trio.Event

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


async def _serve_manager(
    service: ManagerService, *, task_status: trio.TaskStatus[_Manager]
) -> None:
    stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                handle = await nursery.start(service.serve)
                task_status.started(_Manager(handle, scope, stopped))
    finally:
        stopped.set()


@dataclass
class Cluster:
    """A running manager with its agents, and the default fixture's keypairs."""

    handle: ManagerHandle
    agents: list[AgentService]
    user_key: str
    admin_key: str
    events: Events
    nursery: trio.Nursery
    buses: list[EventBus]
    #: Another component's bus (a new Redis connection, or the one in-process bus).
    open_bus: Callable[[], Awaitable[EventBus]]
    manager: _Manager
    start_manager: Callable[[], Awaitable[_Manager]]

    async def restart_manager(self) -> None:
        """Stop the manager, its work cut off where it stands, and start a fresh one.

        The new manager has the same config, database and bus, and finds the
        same agents; what the old one did not write to the database is lost,
        as in a crash.
        """
        await self.manager.stop()
        self.manager = await self.start_manager()
        self.handle = self.manager.handle

    @property
    def ctx(self) -> ManagerContext:
        return self.handle.ctx

    @property
    def registry(self) -> SessionRegistry:
        return self.ctx.registry

    @property
    def db(self) -> Database:
        return self.ctx.db

    async def enqueue(self, image: str = "python", **options: Any) -> SessionInfo:
        options.setdefault("resources", {"cpu": "1", "mem": "256m"})
        result = await self.registry.enqueue_session(
            self.user_key, SessionRequest(image=image, **options)
        )
        return result.session

    async def start(self, image: str = "python", **options: Any) -> SessionInfo:
        """Enqueue a session and wait until it left the starting statuses."""
        info = await self.enqueue(image, **options)
        return await self.registry.wait_for_start(info.id, timeout=60)

    async def wait_status(
        self, session_id: uuid.UUID, *statuses: SessionStatus, within: float = 30.0
    ) -> SessionInfo:
        """Poll until the session is in one of *statuses*."""
        with trio.fail_after(within):
            while True:
                info = await self.registry.get_session_by_id(session_id)
                if info.status in statuses:
                    return info
                await trio.sleep(0.05)

    async def output(self, session: SessionInfo, code: str) -> str:
        """Run *code* to the end in query mode; its stdout (stderr when there is none)."""
        run_id = uuid.uuid4().hex[:12]
        result = await self.registry.execute(session, mode="query", code=code, run_id=run_id)
        console = list(result["console"])
        while result["status"] == "continued":
            result = await self.registry.execute(session, mode="continue", run_id=run_id)
            console += result["console"]
        assert result["status"] == "finished", result
        out = "".join(text for kind, text in console if kind == "stdout")
        return out or "".join(text for kind, text in console if kind == "stderr")

    async def capacity(self, agent_id: str) -> ResourceSlot:
        row = await self.db.fetch(
            sa.select(agents.c.available_slots).where(agents.c.id == agent_id)
        )
        slots: ResourceSlot = row.scalar()
        return slots

    async def wait_agents(self, count: int, within: float = 15.0) -> None:
        """Wait until *count* agents are registered ALIVE."""
        with trio.fail_after(within):
            while True:
                rows = await self.db.fetch(sa.select(agents.c.id).where(agents.c.status == "ALIVE"))
                if len(rows) >= count:
                    return
                await trio.sleep(0.05)


async def eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    """Poll until *check()* holds (for state outside the database, such as an agent's kernels)."""
    with trio.fail_after(within):
        while True:
            if check():
                return
            await trio.sleep(0.05)


@asynccontextmanager
async def unreadable(db: Database, table: str) -> AsyncIterator[None]:
    """Make every read of *table* fail for the block, as in a database outage.

    On PostgreSQL another transaction holds the table locked, so reads wait
    and time out (the database's deadlines are cut to a second for the
    block, to keep the test short).  SQLite has no table locks, so there the
    table is renamed away and reads fail with the ``OperationalError`` a
    locked or unreadable file gives.  The other tables stay usable either way.
    """
    if db.dialect_name == "postgresql":
        deadlines = db.statement_timeout, db.acquire_timeout
        async with db.begin() as conn:
            await conn.execute(sa.text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            db.statement_timeout = db.acquire_timeout = 1.0
            try:
                yield
            finally:
                db.statement_timeout, db.acquire_timeout = deadlines
        return
    async with db.begin() as conn:
        await conn.execute(sa.text(f"ALTER TABLE {table} RENAME TO {table}_away"))
    try:
        yield
    finally:
        async with db.begin() as conn:
            await conn.execute(sa.text(f"ALTER TABLE {table}_away RENAME TO {table}"))


async def _keys(db: Database) -> tuple[str, str]:
    rows = await db.fetch(sa.select(keypairs.c.user_id, keypairs.c.access_key))
    by_email = {row.user_id: row.access_key for row in rows}
    return by_email[USER_EMAIL], by_email[ADMIN_EMAIL]


@asynccontextmanager
async def running_cluster(
    db_url: str,
    tmp_path: Path,
    *,
    agent_count: int = 1,
    redis_url: str | None = None,
    manager: dict[str, str | int] | None = None,
    agent_configs: Sequence[AgentConfig] | None = None,
    agent_options: dict[str, Any] | None = None,
    rpc: str = "inproc",
) -> AsyncIterator[Cluster]:
    """Run a manager and *agent_count* agents for the ``async with`` block, then stop them.

    With *redis_url* each component gets its own Redis Streams bus on a
    private key prefix (removed afterwards), as separate processes would.
    *rpc* is ``inproc`` or ``ipc``.
    """
    prefix = f"test:{uuid.uuid4().hex}:"
    configs = list(agent_configs or [])
    while len(configs) < agent_count:
        configs.append(agent_config(tmp_path / f"agent{len(configs)}"))
    async with AsyncExitStack() as stack:
        for config in configs:
            stack.callback(shutil.rmtree, config.agent.ipc_base_path, True)
        db = await stack.enter_async_context(
            create_database(db_url, statement_timeout=10.0, acquire_timeout=10.0)
        )
        await populate(db, default_fixture())
        user_key, admin_key = await _keys(db)
        # Buses outlive the services: they stop only after every service finished.
        bus_nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(bus_nursery.cancel_scope.cancel)
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        buses: list[EventBus] = []

        async def new_bus() -> EventBus:
            if redis_url is None:
                if not buses:
                    bus: EventBus = InProcEventBus()
                    await bus_nursery.start(bus.serve)
                    buses.append(bus)
                return buses[0]
            from bai.common.events.redis import RedisEventBus

            redis_bus = RedisEventBus(redis_url, prefix=prefix, poll_interval=0.2, claim_idle=2.0)
            await bus_nursery.start(redis_bus.serve)
            buses.append(redis_bus)
            return redis_bus

        manager_bus = await new_bus()
        recorder = Events(patience=20.0)

        async def record(*, task_status: trio.TaskStatus[None]) -> None:
            async with manager_bus.subscribe(buffer_size=100_000) as subscription:
                task_status.started()
                await recorder.record(subscription)

        await nursery.start(record)

        async def start_manager() -> _Manager:
            service = ManagerService(
                manager_config(manager),
                bus=manager_bus,
                database=db,
                upgrade_schema=False,
                serve_api=False,
            )
            running: _Manager = await nursery.start(_serve_manager, service)
            return running

        first_manager = await start_manager()
        started: list[AgentService] = []
        for config in configs:
            if rpc == "inproc":
                listen = f"inproc://agent-{uuid.uuid4().hex}"
            else:
                listen = f"ipc://{config.agent.ipc_base_path}/agent-rpc.sock"
            agent = AgentService(
                config,
                event_bus=await new_bus(),
                rpc_listen_addr=listen,
                stats_interval=0.5,
                **(agent_options or {}),
            )
            await nursery.start(agent.serve)
            started.append(agent)
        cluster = Cluster(
            first_manager.handle,
            started,
            user_key,
            admin_key,
            recorder,
            nursery,
            buses,
            new_bus,
            first_manager,
            start_manager,
        )
        await cluster.wait_agents(len(started))
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()
    if redis_url is not None:
        import coredis

        async with coredis.Redis.from_url(redis_url) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(keys)
