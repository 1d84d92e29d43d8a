"""``WatcherService``: the agent control and the watcher's API on ``[watcher] service-addr``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hypercorn.trio
import trio

from bai.common.config import AgentConfig
from bai.common.hypercorn_setup import base_url, hypercorn_config
from bai.watcher.app import WatcherApp
from bai.watcher.control import AgentControl, ControlError, ProcessControl, SystemdControl

__all__ = ["WatcherService"]

log = logging.getLogger(__name__)


class WatcherService:
    """One agent's watcher: its control (:mod:`bai.watcher.control`) and its API.

    *control* replaces the one ``[watcher] control`` names (tests pass a
    process of their own).  Raises :class:`ControlError` at start when the
    config has no ``[watcher] token``.
    """

    def __init__(
        self,
        config: AgentConfig,
        config_path: Path | None,
        *,
        control: AgentControl | None = None,
    ) -> None:
        self.config = config
        section = config.watcher
        if control is None:
            if section.control == "systemd":
                control = SystemdControl(section.target_service)
            else:
                control = ProcessControl(config_path)
        self.control = control

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; started with the API's base URL."""
        section = self.config.watcher
        if section.token is None:
            raise ControlError("[watcher] token is not set: managers could not be told apart")
        hyper = hypercorn_config(
            section.service_addr,
            ssl_enabled=section.ssl_enabled,
            certfile=section.ssl_cert,
            keyfile=section.ssl_privkey,
            logger="bai.watcher.api",
            graceful_timeout=2.0,
        )
        # hypercorn's own types name every ASGI event; the app speaks plain dicts.
        app: Any = WatcherApp(self.control, section.token)

        async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn.trio.serve(app, hyper, task_status=task_status, mode="asgi")

        async with trio.open_nursery() as nursery:
            await nursery.start(self.control.serve)
            bound: list[str] = await nursery.start(run)
            url = base_url(bound)
            log.info("watcher of agent %s at %s (%s)", self.config.agent.id, url, section.control)
            task_status.started(url)
