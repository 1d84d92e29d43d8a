"""The standalone storage proxy behind ``bai storage-proxy --config storage-proxy.toml``.

Loads ``storage-proxy.toml`` (see :func:`bai.common.config.load_config`),
sets up logging, writes ``[storage-proxy] pid-file`` if set, and runs
:class:`~bai.storage.server.StorageProxyService` until SIGINT or SIGTERM
(:func:`bai.common.daemon.run_daemon`).  A bad config exits 2 with one line
naming the problem; a clean stop exits 0.
"""

from __future__ import annotations

from pathlib import Path

import trio

from bai.common.config import StorageProxyConfig
from bai.common.daemon import run_daemon
from bai.storage.server import StorageProxyService


async def _start(config: StorageProxyConfig, nursery: trio.Nursery) -> None:
    await nursery.start(StorageProxyService(config).serve)


def main(config_path: Path | None) -> int:
    """Run the storage proxy until a signal; returns the process exit code."""
    return run_daemon(
        "storage-proxy",
        StorageProxyConfig,
        config_path,
        start=_start,
        logging_of=lambda config: config.logging,
        pid_file_of=lambda config: config.storage_proxy.pid_file,
    )
