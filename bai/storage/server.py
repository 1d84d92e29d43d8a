"""The storage proxy service: its volumes, its two HTTP listeners and its usage scans.

:class:`StorageProxyService` opens every ``[volume.NAME]`` of the config,
serves the manager-facing API (:mod:`bai.storage.manager_api`, quart-trio) on
``[api.manager] service-addr`` with hypercorn's Trio worker and the
client-facing API (:mod:`bai.storage.client_api`, plain ASGI) on ``[api.client]
service-addr`` with the proxy's own HTTP/1.1 server (:mod:`bai.storage.http11`,
which sends downloaded files with ``sendfile``), and rescans every folder's usage every
``[storage-proxy] usage-scan-interval``.  ``bai storage-proxy`` runs it as a
daemon (:mod:`bai.storage.daemon`); ``bai up`` and the tests run it in a
nursery of their own.
"""

from __future__ import annotations

import logging
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from bai.common.config import ClientApiConfig, StorageProxyConfig
from bai.common.hypercorn_setup import base_url, hypercorn_config
from bai.storage.client_api import ClientApp
from bai.storage.context import StorageContext
from bai.storage.http11 import Http11Server
from bai.storage.manager_api import create_manager_app
from bai.storage.tokens import TokenSigner
from bai.storage.volumes.base import Volume
from bai.storage.volumes.vfs import VfsVolume

__all__ = ["ProxyAddresses", "StorageProxyService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxyAddresses:
    """Where the two APIs of a running proxy answer."""

    manager_api: str
    client_api: str


class StorageProxyService:
    """One storage proxy: every volume of *config* behind both APIs."""

    def __init__(self, config: StorageProxyConfig) -> None:
        self.config = config
        proxy = config.storage_proxy
        owner = None
        if proxy.user is not None or proxy.group is not None:
            owner = (
                proxy.user if proxy.user is not None else -1,
                proxy.group if proxy.group is not None else -1,
            )
        self.volumes: dict[str, Volume] = {
            name: VfsVolume(name, volume.path, owner=owner, scandir_limit=proxy.scandir_limit)
            for name, volume in config.volume.items()
        }
        self.ctx = StorageContext(
            config, self.volumes, TokenSigner(proxy.secret, float(proxy.session_expire))
        )

    async def _scan_usage(self) -> None:
        interval = float(self.config.storage_proxy.usage_scan_interval)
        while True:
            for volume in self.volumes.values():
                try:
                    await volume.refresh_usage()
                except OSError as exc:
                    log.warning("volume %s: usage scan failed: %s", volume.name, exc)
            await trio.sleep(interval)

    async def serve(
        self, *, task_status: trio.TaskStatus[ProxyAddresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve both APIs until cancelled; reports the bound addresses (port 0 works)."""
        api = self.config.api
        async with AsyncExitStack() as stack:
            for volume in self.volumes.values():
                await volume.open()
                stack.push_async_callback(volume.aclose)
            async with trio.open_nursery() as nursery:
                manager_hyper = hypercorn_config(
                    api.manager.service_addr,
                    ssl_enabled=api.manager.ssl_enabled,
                    certfile=api.manager.ssl_cert,
                    keyfile=api.manager.ssl_privkey,
                    logger="bai.storage.manager_api",
                    graceful_timeout=5.0,
                )
                client_server = Http11Server(
                    ClientApp(self.ctx),
                    logger=logging.getLogger("bai.storage.client_api"),
                    ssl_context=_server_ssl_context(api.client),
                )
                manager_bound: list[str] = await nursery.start(
                    _serve, create_manager_app(self.ctx), manager_hyper
                )
                client_bound: list[str] = await nursery.start(
                    client_server.serve,
                    api.client.service_addr.host,
                    api.client.service_addr.port,
                )
                addresses = ProxyAddresses(base_url(manager_bound), base_url(client_bound))
                nursery.start_soon(self._scan_usage)
                log.info(
                    "storage proxy %s: manager API %s, client API %s, volumes %s",
                    self.config.storage_proxy.node_id,
                    addresses.manager_api,
                    addresses.client_api,
                    ", ".join(self.volumes),
                )
                task_status.started(addresses)


async def _serve(
    app: Any, hyper: HypercornConfig, *, task_status: trio.TaskStatus[list[str]]
) -> None:
    await serve(app, hyper, task_status=task_status, mode="asgi")


def _server_ssl_context(config: ClientApiConfig) -> ssl.SSLContext | None:
    """The TLS context of the client-facing listener, or None when TLS is off."""
    if not config.ssl_enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(config.ssl_cert), str(config.ssl_privkey))
    context.set_alpn_protocols(["http/1.1"])
    return context
