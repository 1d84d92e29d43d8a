"""One kernel as the agent tracks it, and the stats it reports for kernels.

:class:`AgentKernel` is the in-memory state around a :class:`KernelRecord`:
status, the runner link, the top process, why it is stopping, and the events
other tasks wait on.  Its status changes only through
:meth:`AgentKernel.transition`, which checks the kernel transition table of
:mod:`bai.common.types` (the one the manager checks), so an illegal change
raises :class:`~bai.common.types.InvalidTransition` instead of passing.

:func:`format_stats` turns a cgroup sample into the per-kernel ``last_stat``
map Backend.AI reports (``cpu_used``, ``cpu_util``, ``mem``, ``io_read``,
``io_write``, ``pids``), every value a decimal string.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import trio

from bai.agent.backends.base import KernelProcess
from bai.agent.cgroups import CgroupUsage, OomKillCounter
from bai.agent.kernel_store import KernelRecord
from bai.agent.runnerlink import RunnerLink
from bai.common.agent_api import DestroyResult
from bai.common.types import KernelStatus, check_transition

#: File operations (upload, download, list) one kernel may have running at once.
FILE_OPS_AT_ONCE: Final = 2


@dataclass(eq=False)
class AgentKernel:
    """The agent's live view of one kernel."""

    record: KernelRecord
    status: KernelStatus
    #: Cores (for ``cpu_util`` capacity) and bytes (for ``mem``) the kernel may use.
    cpu_limit: Decimal | None = None
    memory_limit: int | None = None
    link: RunnerLink | None = None
    process: KernelProcess | None = None
    exit_code: int | None = None
    #: Why the agent is stopping the kernel (kebab-case); None while nobody asked.
    stop_reason: str | None = None
    restarting: bool = False
    #: Set by restart_kernel once the old runner is gone: the supervisor may spawn again.
    respawn: trio.Event = field(default_factory=trio.Event)
    #: Set each time the kernel becomes RUNNING (after start and after each restart).
    ready: trio.Event = field(default_factory=trio.Event)
    #: Set once the kernel is gone and its resources are released.
    gone: trio.Event = field(default_factory=trio.Event)
    #: The threads of the kernel's file operations: its own, so that files which
    #: slow one kernel down cannot take the threads every other kernel needs.
    file_ops: trio.CapacityLimiter = field(
        default_factory=lambda: trio.CapacityLimiter(FILE_OPS_AT_ONCE)
    )
    #: The cgroup's OOM kills a run was told about (stats samples leave it alone:
    #: a sample between a kill and the end of its run would hide the kill).
    oom_kills: int = 0
    #: Reads that count, opened at the first run's end.
    oom_counter: OomKillCounter | None = None
    last_stat: dict[str, Any] | None = None
    _previous: tuple[int, float] | None = None
    #: The most memory any sample of this kernel showed (bytes).
    _memory_max: int = 0
    #: What ``destroy_kernel`` answers once the kernel is gone.
    result: DestroyResult | None = None

    @property
    def kernel_id(self) -> str:
        return self.record.kernel_id

    def transition(self, status: KernelStatus) -> None:
        """Move to *status*; staying where it is does nothing, a move the table forbids raises."""
        if status is self.status:
            return
        check_transition(self.status, status)
        self.status = status

    def update_stats(self, usage: CgroupUsage) -> None:
        """Record a new sample as :attr:`last_stat` (``cpu_util`` needs two samples)."""
        now = time.monotonic()
        util: Decimal | None = None
        if usage.cpu_ns is not None:
            if self._previous is not None and now > self._previous[1]:
                used = max(usage.cpu_ns - self._previous[0], 0)
                util = Decimal(used) / Decimal(int((now - self._previous[1]) * 1e9)) * 100
            self._previous = (usage.cpu_ns, now)
        if usage.memory is not None:
            self._memory_max = max(self._memory_max, usage.memory)
        self.last_stat = format_stats(
            usage, util, self.cpu_limit, self.memory_limit, memory_max=self._memory_max
        )


def _measure(
    current: Decimal | int, capacity: Decimal | int | None, unit: str
) -> dict[str, str | None]:
    out: dict[str, str | None] = {
        "current": _text(current),
        "capacity": _text(capacity) if capacity is not None else None,
        "unit_hint": unit,
    }
    if capacity:
        out["pct"] = _text(Decimal(current) / Decimal(capacity) * 100)
    return out


def _text(value: Decimal | int) -> str:
    if isinstance(value, int):
        return str(value)
    return str(value.quantize(Decimal("0.01")))


def format_stats(
    usage: CgroupUsage,
    cpu_util: Decimal | None,
    cpu_limit: Decimal | None,
    memory_limit: int | None,
    *,
    memory_max: int | None = None,
) -> dict[str, Any]:
    """The ``last_stat`` map of one sample (metrics the host cannot measure are left out).

    *memory_max* is the most memory the kernel used in any sample so far,
    reported as ``mem``'s ``stats.max`` (the original's key).
    """
    stat: dict[str, Any] = {"collected_at": _text(Decimal(time.time()).quantize(Decimal("0.001")))}
    if usage.cpu_ns is not None:
        stat["cpu_used"] = _measure(usage.cpu_ns // 1_000_000, None, "msec")
    if cpu_util is not None:
        capacity = cpu_limit * 100 if cpu_limit else None
        stat["cpu_util"] = _measure(cpu_util, capacity, "percent")
    if usage.memory is not None:
        stat["mem"] = _measure(usage.memory, memory_limit, "bytes")
        if memory_max is not None:
            stat["mem"]["stats.max"] = _text(max(memory_max, usage.memory))
    if usage.io_read is not None:
        stat["io_read"] = _measure(usage.io_read, None, "bytes")
    if usage.io_write is not None:
        stat["io_write"] = _measure(usage.io_write, None, "bytes")
    if usage.pids is not None:
        stat["pids"] = _measure(usage.pids, None, "count")
    return stat
