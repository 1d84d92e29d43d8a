"""Network helpers for tests: a loopback TCP port nobody listens on, a web app served on one, and
the host port range of a test agent's kernels.

Agents hand out their ``[container] port-range`` in order from its first port, so
two agents of parallel test workers with the same range would race for the same
ports (a kernel without a private network binds its service ports itself, after
the agent checked them free).  :func:`agent_port_range` gives each xdist worker
a block of its own below the kernel's ephemeral range (32768 and up, where
:func:`free_port` and outgoing connections take theirs) and away from the
defaults a ``bai up`` on the same host uses (30000-31000, apps 10205-10300).
"""

from __future__ import annotations

import socket

import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from support.workers import worker_number

__all__ = ["agent_port_range", "free_port", "serve_app"]

#: Worker *w* owns ports ``AGENT_PORTS + w * WORKER_PORTS`` and the next ``WORKER_PORTS - 1``.
AGENT_PORTS = 20000
WORKER_PORTS = 1000
#: Each agent of a test gets this many ports of its worker's block.
AGENT_SLOT_PORTS = 250


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def agent_port_range(agent: int = 0) -> tuple[int, int]:
    """``[container] port-range`` for the *agent*-th agent (0-3) of a test: a quarter of this
    worker's block.  Agents in one process may share a range (one pool never hands a port
    out twice and checks each port with a bind first).

    Workers past the tenth share blocks again (20000-29999 holds ten): still correct, since
    an agent hands out only ports it could bind, but no longer free of races.
    """
    if not 0 <= agent < WORKER_PORTS // AGENT_SLOT_PORTS:
        raise ValueError(f"agent slot {agent} is not in 0-{WORKER_PORTS // AGENT_SLOT_PORTS - 1}")
    low = AGENT_PORTS + (worker_number() % 10) * WORKER_PORTS + agent * AGENT_SLOT_PORTS
    return low, low + AGENT_SLOT_PORTS - 1


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
