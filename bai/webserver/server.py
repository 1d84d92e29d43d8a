"""The webserver service: its session store, its client to the manager API, its listener.

:class:`WebserverService` opens the store ``[redis]`` names (memory under
``bai up``, Redis in the distributed mode, where every webserver of a cluster
shares it), empties it first if ``[session] flush-on-startup``, and serves
:class:`~bai.webserver.app.WebserverApp` on ``[webserver] service-addr`` with
hypercorn.  It reports the base URL clients use (port 0 works); cancelling
:meth:`WebserverService.serve` closes the listener, the client and the store.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from bai.common.config import WebserverConfig
from bai.common.hypercorn_setup import base_url, hypercorn_config
from bai.webserver.app import WebserverApp
from bai.webserver.store import open_session_store

__all__ = ["WebserverService"]

log = logging.getLogger(__name__)


class WebserverService:
    """One console server configured by *config*; see the module docstring."""

    def __init__(self, config: WebserverConfig) -> None:
        self.config = config

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the base URL it answers at."""
        section = self.config.webserver
        api = self.config.api
        timeout = httpx.Timeout(None, connect=float(api.connect_timeout))
        async with (
            open_session_store(self.config.redis) as store,
            httpx.AsyncClient(verify=api.ssl_verify, timeout=timeout, trust_env=False) as client,
            trio.open_nursery() as nursery,
        ):
            if self.config.session.flush_on_startup:
                await store.flush()
                log.info("webserver: session store flushed")
            hyper = hypercorn_config(
                section.service_addr,
                ssl_enabled=section.ssl_enabled,
                certfile=section.ssl_cert,
                keyfile=section.ssl_privkey,
                logger="bai.webserver.app",
                graceful_timeout=5.0,
            )
            app = WebserverApp(self.config, store, client)
            bound: list[str] = await nursery.start(_serve, app, hyper)
            url = base_url(bound)
            kind = "Redis" if self.config.redis.type == "redis" else "memory"
            log.info("webserver: %s, relaying to %s, sessions in %s", url, api.endpoint, kind)
            task_status.started(url)


async def _serve(
    app: Any, hyper: HypercornConfig, *, task_status: trio.TaskStatus[list[str]]
) -> None:
    await serve(app, hyper, task_status=task_status, mode="asgi")
