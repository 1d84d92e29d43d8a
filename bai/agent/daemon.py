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
import os
import signal
from pathlib import Path
from urllib.parse import quote

import trio

from bai.agent.server import AgentService
from bai.common.config import AgentConfig, ConfigError, load_config
from bai.common.events import EventBus, InProcEventBus
from bai.common.logging import setup_logging_from

log = logging.getLogger(__name__)


def _event_bus(config: AgentConfig) -> EventBus:
    redis = config.redis
    if redis.type == "inproc":
        log.warning("event bus is in-process: no manager will see this agent's events")
        return InProcEventBus()
    from bai.common.events_redis import RedisEventBus

    auth = f":{quote(redis.password, safe='')}@" if redis.password else ""
    return RedisEventBus(f"redis://{auth}{redis.addr.host}:{redis.addr.port}/{redis.db}")


async def _serve(config: AgentConfig) -> None:
    bus = _event_bus(config)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            with trio.fail_after(float(config.redis.connect_timeout)):
                await nursery.start(bus.serve)
            await nursery.start(AgentService(config, event_bus=bus).serve)
            async for signum in signals:
                log.info("received %s; stopping", signal.Signals(signum).name)
                break
        nursery.cancel_scope.cancel()


def main(config_path: Path | None) -> int:
    """Run the agent until a signal; returns the process exit code."""
    try:
        loaded = load_config(AgentConfig, config_path)
    except ConfigError as exc:
        print(f"bai agent: {exc}")
        return 2
    config = loaded.config
    setup_logging_from(config.logging)
    log.info("%s", loaded.describe())
    pid_file = config.agent.pid_file
    if pid_file is not None:
        pid_file.write_text(f"{os.getpid()}\n")
    try:
        trio.run(_serve, config)
    finally:
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
    return 0
