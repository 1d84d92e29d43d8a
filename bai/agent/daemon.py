"""The standalone agent process behind ``bai agent --config agent.toml``.

Loads ``agent.toml`` (see :func:`bai.common.config.load_config`), sets up
logging, opens the event bus the ``[redis]`` section names (Redis Streams, or
an in-process bus that only this process sees), runs
:class:`~bai.agent.server.AgentService` until SIGINT or SIGTERM, and exits 0
after every kernel is gone.  A bad config exits 2 with one line naming the
problem.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from bai.agent.server import AgentService
from bai.common.config import AgentConfig
from bai.common.daemon import run_daemon
from bai.common.events import running_event_bus

log = logging.getLogger(__name__)


async def _serve(config: AgentConfig, *, task_status: trio.TaskStatus[list[str]]) -> None:
    # The bus outlives the agent: its shutdown reports every kernel it kills.
    async with running_event_bus(config.redis) as bus:
        await AgentService(config, event_bus=bus).serve(task_status=task_status)


async def _start(config: AgentConfig, nursery: trio.Nursery) -> None:
    if config.redis.type == "inproc":
        log.warning("event bus is in-process: no manager will see this agent's events")
    await nursery.start(_serve, config)


def main(config_path: Path | None) -> int:
    """Run the agent until a signal; returns the process exit code."""
    return run_daemon(
        "agent",
        AgentConfig,
        config_path,
        start=_start,
        logging_of=lambda config: config.logging,
        pid_file_of=lambda config: config.agent.pid_file,
    )
