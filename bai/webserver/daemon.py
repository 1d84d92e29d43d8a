"""The standalone webserver behind ``bai webserver --config webserver.toml``.

Loads ``webserver.toml`` (see :func:`bai.common.config.load_config`), sets up
logging, writes ``[webserver] pid-file`` if set, and runs
:class:`~bai.webserver.server.WebserverService` until SIGINT or SIGTERM
(:func:`bai.common.daemon.run_daemon`).  A bad config exits 2 with one line
naming the problem; a clean stop exits 0.
"""

from __future__ import annotations

from pathlib import Path

import trio

from bai.common.config import WebserverConfig
from bai.common.daemon import run_daemon
from bai.webserver.server import WebserverService


async def _start(config: WebserverConfig, nursery: trio.Nursery) -> None:
    await nursery.start(WebserverService(config).serve)


def main(config_path: Path | None) -> int:
    """Run the webserver until a signal; returns the process exit code."""
    return run_daemon(
        "webserver",
        WebserverConfig,
        config_path,
        start=_start,
        logging_of=lambda config: config.logging,
        pid_file_of=lambda config: config.webserver.pid_file,
    )
