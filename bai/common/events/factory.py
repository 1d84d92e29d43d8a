"""The event bus a daemon's ``[redis]`` config section names, built and served.

``type = "inproc"`` gives the in-process bus; ``"redis"`` the Redis Streams
bus, whose module (and with it the Redis client) is imported only then, so
that the embedded mode never loads a Redis client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from bai.common.events.bus import EventBus
from bai.common.events.inproc import InProcEventBus

if TYPE_CHECKING:
    from bai.common.config import RedisConfig

__all__ = ["event_bus_for", "running_event_bus"]


def event_bus_for(redis: RedisConfig) -> EventBus:
    """The (not yet started) event bus a daemon's ``[redis]`` section names.

    ``type = "inproc"`` gives an :class:`InProcEventBus` that only this process
    sees; ``"redis"`` a Redis Streams bus (imported only then, so the embedded
    mode never loads the Redis client).
    """
    if redis.type == "inproc":
        return InProcEventBus()
    from bai.common.events.redis import RedisEventBus

    return RedisEventBus(redis.url)


@asynccontextmanager
async def running_event_bus(redis: RedisConfig) -> AsyncIterator[EventBus]:
    """Serve the bus *redis* names (see :func:`event_bus_for`) for the ``async with`` block.

    The bus stops only after the block has exited, even when the block is
    cancelled: a daemon's services still publish (``kernel_terminated``,
    ``agent_terminated``) and hand back consumed events while they clean up
    after the cancellation that stops the daemon.  Raises
    :class:`trio.TooSlowError` if the bus does not start within the
    section's ``connect-timeout``.
    """
    bus = event_bus_for(redis)
    async with trio.open_nursery() as nursery:
        bus_scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[None]) -> None:
            with bus_scope:
                await bus.serve(task_status=task_status)

        with trio.fail_after(float(redis.connect_timeout)):
            await nursery.start(serve)
        # Shielded only now, so that the start above still honours its deadline.
        bus_scope.shield = True
        try:
            yield bus
        finally:
            bus_scope.cancel()
