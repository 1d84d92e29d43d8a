"""Live statistics of running kernels, as the agents sample them.

Each agent publishes an ``agent_stats`` event every stats interval
(:class:`~bai.common.events.AgentStatsReported`: each running kernel's
``last_stat``).  Every manager follows them (broadcast) and keeps the newest
sample per kernel in memory; the API answers ``lastStat`` and
``cpuCreditUsed`` of a running session, and ``live_stat`` in GraphQL, from
here.  The database keeps only the final sample a kernel's end reports.

Guarantees:

* A sample older than :data:`STALE_AFTER` seconds is never answered: a
  kernel whose agent stopped reporting (lost, or the kernel ended) shows no
  live statistics rather than old ones.
* Memory is bounded by the kernels reported in the last
  :data:`STALE_AFTER` seconds: stale entries are swept every
  :data:`STALE_AFTER` seconds.
* Samples lost while this manager fell behind the bus are replaced by the
  next ones (there is nothing to make up for).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

import trio

from bai.common.events import AgentStatsReported, Event, EventBus, follow_events

__all__ = ["STALE_AFTER", "LiveStats"]

log = logging.getLogger(__name__)

#: Seconds a sample stays live (several of the agents' stats intervals).
STALE_AFTER: Final = 30.0


class LiveStats:
    """The newest sample of each running kernel (module docs)."""

    def __init__(self, bus: EventBus, *, stale_after: float = STALE_AFTER) -> None:
        self._bus = bus
        self._stale_after = stale_after
        self._samples: dict[str, tuple[float, Mapping[str, Any]]] = {}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the agents' samples until cancelled; report started once subscribed."""
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    follow_events,
                    self._bus,
                    (AgentStatsReported,),
                    self._on_sample,
                    buffer_size=1024,
                    on_overflow=functools.partial(log.info, "agent samples came too fast"),
                )
            )
            nursery.start_soon(self._sweep)
            task_status.started()

    def kernel(self, kernel_id: uuid.UUID | str) -> Mapping[str, Any] | None:
        """The newest live sample of *kernel_id*, or None."""
        entry = self._samples.get(str(kernel_id))
        if entry is None or trio.current_time() - entry[0] > self._stale_after:
            return None
        return entry[1]

    def kernels(self, kernel_ids: Iterable[uuid.UUID | str]) -> dict[str, Mapping[str, Any]]:
        """The live samples of those of *kernel_ids* that have one, by kernel id text."""
        found: dict[str, Mapping[str, Any]] = {}
        for kernel_id in kernel_ids:
            sample = self.kernel(kernel_id)
            if sample is not None:
                found[str(kernel_id)] = sample
        return found

    async def _on_sample(self, event: Event) -> None:
        assert isinstance(event, AgentStatsReported)
        now = trio.current_time()
        for kernel_id, stat in event.kernels.items():
            if isinstance(stat, Mapping):
                self._samples[kernel_id] = (now, stat)

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(self._stale_after)
            oldest = trio.current_time() - self._stale_after
            self._samples = {k: v for k, v in self._samples.items() if v[0] >= oldest}
