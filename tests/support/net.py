"""Network helpers for tests: a loopback TCP port nobody listens on, and a web app served on one."""

from __future__ import annotations

import socket

import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

__all__ = ["free_port", "serve_app"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def serve_app(
    app: QuartTrio, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve *app* with hypercorn on a free loopback port, quietly, until cancelled; started
    with its base URL."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1

    async def run_server(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn.trio.serve(app, config, task_status=task_status)

    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(run_server)
        task_status.started(addresses[0])
