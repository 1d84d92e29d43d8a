"""A real storage proxy for tests, announced to the manager through the shared config.

:func:`start_storage_proxy` runs :class:`bai.storage.server.StorageProxyService`
in a nursery the caller owns, with ``vfs`` volumes under a folder of the test,
and writes the ``volumes/*`` keys a manager reads to find it (the same keys
``bai up`` and an operator write).  The deployments of
:mod:`support.api_session` start one with ``storage=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from bai.storage.server import ProxyAddresses, StorageProxyService

from bai.agent.backends.local import kernel_owner
from bai.common.config import StorageProxyConfig, parse_config
from bai.common.storage_api import proxy_config_items
from bai.manager.db import Database
from bai.manager.models.shared_config import put_config_many

#: The proxy and volume names of the test deployments: the vfolder host is ``local:local``.
PROXY = "local"
VOLUME = "local"


@dataclass(frozen=True)
class StorageHandle:
    """A running proxy: its addresses, its config and each volume's folder."""

    proxy: str
    addresses: ProxyAddresses
    config: StorageProxyConfig
    volumes: dict[str, Path]

    @property
    def default_host(self) -> str:
        return f"{self.proxy}:{next(iter(self.volumes))}"


def storage_config(
    root: Path,
    *,
    volumes: Sequence[str] = (VOLUME,),
    owner: tuple[int, int] | None = None,
    extra: str = "",
) -> StorageProxyConfig:
    """A proxy config with loopback APIs on free ports and *volumes* under *root*."""
    owner_lines = f"user = {owner[0]}\ngroup = {owner[1]}" if owner else ""
    volume_lines = "".join(
        f'[volume.{name}]\nbackend = "vfs"\npath = {json.dumps(str(root / name))}\n'
        for name in volumes
    )
    return parse_config(
        StorageProxyConfig,
        f"""
[storage-proxy]
node-id = "test-storage"
{owner_lines}
{extra}
[api.client]
service-addr = "127.0.0.1:0"
[api.manager]
service-addr = "127.0.0.1:0"
{volume_lines}
""",
        source="test storage proxy",
    )


async def start_storage_proxy(
    nursery: trio.Nursery,
    db: Database,
    root: Path,
    *,
    proxy: str = PROXY,
    volumes: Sequence[str] = (VOLUME,),
    owner: tuple[int, int] | None = None,
    extra: str = "",
) -> StorageHandle:
    """Start a proxy in *nursery* and announce it in *db*'s shared config."""
    if owner is None and os.geteuid() == 0:
        # As root the agent runs kernels as its kernel user: folders must be theirs.
        owner = kernel_owner(None, None)
    for name in volumes:
        (root / name).mkdir(parents=True, exist_ok=True)
    config = storage_config(root, volumes=volumes, owner=owner, extra=extra)
    addresses: ProxyAddresses = await nursery.start(StorageProxyService(config).serve)
    items = proxy_config_items(
        proxy,
        manager_api=addresses.manager_api,
        client_api=addresses.client_api,
        secret=config.api.manager.secret,
        ssl_verify=False,
        default_host=f"{proxy}:{volumes[0]}",
    )
    async with db.begin() as conn:
        await put_config_many(conn, items)
    return StorageHandle(proxy, addresses, config, {name: root / name for name in volumes})
