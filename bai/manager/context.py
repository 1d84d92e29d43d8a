"""The manager as its API sees it: configuration, database, bus and the services.

:mod:`bai.manager.server` builds the services (each takes the narrow
protocols of :mod:`bai.manager.protocols`, never this context) and attaches
them to a :class:`ManagerContext`; the API reads it as ``current_app.bai``.
A service asked for before it was attached raises :class:`ServiceNotReady`
instead of failing on ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bai.common.config import ManagerConfig
from bai.common.errors import BaiError
from bai.common.events import EventBus
from bai.manager.agents import AgentPool
from bai.manager.bgtask import BackgroundTasks
from bai.manager.db import Database
from bai.manager.idle import IdleChecker
from bai.manager.livestats import LiveStats
from bai.manager.protocols import StorageClient
from bai.manager.scheduler.dispatcher import Dispatcher
from bai.manager.sessions.registry import SessionRegistry


class ServiceNotReady(BaiError):
    """A manager service was used before the manager finished starting it."""

    http_status = 503
    error_type = "service-not-ready"


@dataclass
class ManagerContext:
    config: ManagerConfig
    db: Database
    bus: EventBus
    _agents: AgentPool | None = None
    _registry: SessionRegistry | None = None
    _dispatcher: Dispatcher | None = None
    _storage: StorageClient | None = None
    _bgtasks: BackgroundTasks | None = None
    _idle: IdleChecker | None = None
    _livestats: LiveStats | None = None

    @property
    def agents(self) -> AgentPool:
        if self._agents is None:
            raise ServiceNotReady("the agent pool is not running yet")
        return self._agents

    @agents.setter
    def agents(self, value: AgentPool) -> None:
        self._agents = value

    @property
    def registry(self) -> SessionRegistry:
        if self._registry is None:
            raise ServiceNotReady("the session registry is not running yet")
        return self._registry

    @registry.setter
    def registry(self, value: SessionRegistry) -> None:
        self._registry = value

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise ServiceNotReady("the scheduler dispatcher is not running yet")
        return self._dispatcher

    @dispatcher.setter
    def dispatcher(self, value: Dispatcher) -> None:
        self._dispatcher = value

    @property
    def storage(self) -> StorageClient:
        """The storage proxies' client (:class:`bai.manager.vfolders.proxies.StorageProxies`)."""
        if self._storage is None:
            raise ServiceNotReady("the storage proxy client is not set up yet")
        return self._storage

    @storage.setter
    def storage(self, value: StorageClient) -> None:
        self._storage = value

    @property
    def bgtasks(self) -> BackgroundTasks:
        """The background tasks (:mod:`bai.manager.bgtask`) that routes start."""
        if self._bgtasks is None:
            raise ServiceNotReady("background tasks are not running yet")
        return self._bgtasks

    @bgtasks.setter
    def bgtasks(self, value: BackgroundTasks) -> None:
        self._bgtasks = value

    @property
    def idle(self) -> IdleChecker:
        """The idle checker (:mod:`bai.manager.idle`): its ``idle_checks`` reports."""
        if self._idle is None:
            raise ServiceNotReady("the idle checker is not running yet")
        return self._idle

    @idle.setter
    def idle(self, value: IdleChecker) -> None:
        self._idle = value

    @property
    def livestats(self) -> LiveStats:
        """The running kernels' newest samples (:mod:`bai.manager.livestats`)."""
        if self._livestats is None:
            raise ServiceNotReady("live statistics are not running yet")
        return self._livestats

    @livestats.setter
    def livestats(self, value: LiveStats) -> None:
        self._livestats = value
