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
from typing import Any

import trio

from bai.agent.backends.local import kernel_owner
from bai.common.config import StorageProxyConfig, parse_config
from bai.embedded import announce_storage_proxy
from bai.manager.db import Database
from bai.storage.server import ProxyAddresses, StorageProxyService

#: The proxy and volume names of the test deployments: the vfolder host is ``local:local``.
PROXY = "local"
VOLUME = "local"
HOST = f"{PROXY}:{VOLUME}"


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


def kernel_volume_owner() -> tuple[int, int] | None:
    """Who must own what the proxy creates: as root the agent runs kernels as its kernel user,
    so the folders must be theirs; otherwise the proxy's own user (``None``)."""
    return kernel_owner(None, None) if os.geteuid() == 0 else None


def storage_toml(
    root: Path,
    *,
    volumes: Sequence[str] = (VOLUME,),
    owner: tuple[int, int] | None = None,
    extra: str = "",
    secret: str | None = None,
    node_id: str = "test-storage",
    client_port: int = 0,
    manager_port: int = 0,
    pid_file: Path | None = None,
) -> str:
    """A ``storage-proxy.toml``: both APIs on loopback (*port* 0: a free one), ``vfs``
    *volumes* under *root*, *owner*, *pid_file* and *extra* in ``[storage-proxy]``, the
    manager-facing *secret* (a random one without it) and plain console logs."""
    section = [f'node-id = "{node_id}"']
    if owner is not None:
        section += [f"user = {owner[0]}", f"group = {owner[1]}"]
    if pid_file is not None:
        section.append(f"pid-file = {json.dumps(str(pid_file))}")
    section_lines = "\n".join(section)
    secret_line = f"secret = {json.dumps(secret)}" if secret is not None else ""
    volume_lines = "".join(
        f'[volume.{name}]\nbackend = "vfs"\npath = {json.dumps(str(root / name))}\n'
        for name in volumes
    )
    return f"""
[storage-proxy]
{section_lines}
{extra}
[api.client]
service-addr = "127.0.0.1:{client_port}"
[api.manager]
service-addr = "127.0.0.1:{manager_port}"
{secret_line}
{volume_lines}
[logging]
drivers = ["console"]
[logging.console]
colored = false
"""


def storage_config(root: Path, **options: Any) -> StorageProxyConfig:
    """The parsed :func:`storage_toml` of *root* and *options*."""
    return parse_config(
        StorageProxyConfig, storage_toml(root, **options), source="test storage proxy"
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
    if owner is None:
        owner = kernel_volume_owner()
    for name in volumes:
        (root / name).mkdir(parents=True, exist_ok=True)
    config = storage_config(root, volumes=volumes, owner=owner, extra=extra)
    addresses: ProxyAddresses = await nursery.start(StorageProxyService(config).serve)
    await announce_storage_proxy(db, proxy, config, addresses, volumes[0])
    return StorageHandle(proxy, addresses, config, {name: root / name for name in volumes})
