"""The standalone app proxy behind ``bai app-proxy --config app-proxy.toml``.

Loads ``app-proxy.toml`` (see :func:`bai.common.config.load_config`), sets
up logging, writes ``[appproxy] pid-file`` if set, and runs
:class:`~bai.appproxy.server.AppProxyService` until SIGINT or SIGTERM
(:func:`bai.common.daemon.run_daemon`).  A bad config exits 2 with one line
naming the problem; a clean stop exits 0.
"""

from __future__ import annotations

from pathlib import Path

import trio

from bai.appproxy.server import AppProxyService
from bai.common.config import AppProxyConfig
from bai.common.daemon import run_daemon


async def _start(config: AppProxyConfig, nursery: trio.Nursery) -> None:
    await nursery.start(AppProxyService(config).serve)


def main(config_path: Path | None) -> int:
    """Run the app proxy until a signal; returns the process exit code."""
    return run_daemon(
        "app-proxy",
        AppProxyConfig,
        config_path,
        start=_start,
        logging_of=lambda config: config.logging,
        pid_file_of=lambda config: config.appproxy.pid_file,
    )
