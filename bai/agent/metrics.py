"""The agent's Prometheus metrics, computed from its state at each scrape.

Served at ``GET /metrics`` on ``[agent] metrics-addr`` when it is set:

* ``bai_agent_kernels{status}``: the agent's kernels by status;
* ``bai_agent_slot_capacity{slot}``, ``bai_agent_slot_allocated{slot}``: each
  resource slot's total and the amount kernels hold (cores, bytes, devices);
* per running kernel (labels ``kernel_id``, ``session_id``), from its newest
  sample: ``bai_agent_kernel_cpu_seconds_total``,
  ``bai_agent_kernel_memory_bytes``, ``bai_agent_kernel_memory_max_bytes``,
  ``bai_agent_kernel_io_read_bytes_total``,
  ``bai_agent_kernel_io_write_bytes_total``.

A metric the host cannot measure (no cgroup I/O accounting, say) is left
out for that kernel rather than reported as 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from bai.agent.kernel import AgentKernel
from bai.common.livestat import stat_value
from bai.common.slots import ResourceSlot

__all__ = ["agent_families"]

_KERNEL_LABELS = ["kernel_id", "session_id"]


def _number(stat: Mapping[str, Any], metric: str, key: str = "current") -> float | None:
    value = stat_value(stat, metric, key)
    return None if value is None else float(value)


def agent_families(
    kernels: Iterable[AgentKernel], capacity: ResourceSlot, allocated: ResourceSlot
) -> list[Metric]:
    """The agent's metric families now (module docs)."""
    kernels = list(kernels)
    by_status = GaugeMetricFamily("bai_agent_kernels", "Kernels by status.", labels=["status"])
    for status, count in sorted(Counter(k.status.value for k in kernels).items()):
        by_status.add_metric([status], count)
    total = GaugeMetricFamily(
        "bai_agent_slot_capacity", "Each resource slot's total.", labels=["slot"]
    )
    held = GaugeMetricFamily(
        "bai_agent_slot_allocated", "Each resource slot held by kernels.", labels=["slot"]
    )
    for slot in sorted(capacity):
        total.add_metric([slot], float(capacity[slot]))
        held.add_metric([slot], float(allocated.get(slot, Decimal(0))))
    cpu = CounterMetricFamily(
        "bai_agent_kernel_cpu_seconds", "CPU time a kernel used.", labels=_KERNEL_LABELS
    )
    memory = GaugeMetricFamily(
        "bai_agent_kernel_memory_bytes", "Memory a kernel uses.", labels=_KERNEL_LABELS
    )
    peak = GaugeMetricFamily(
        "bai_agent_kernel_memory_max_bytes", "The most memory a kernel used.", labels=_KERNEL_LABELS
    )
    read = CounterMetricFamily(
        "bai_agent_kernel_io_read_bytes", "Bytes a kernel read from disks.", labels=_KERNEL_LABELS
    )
    written = CounterMetricFamily(
        "bai_agent_kernel_io_write_bytes", "Bytes a kernel wrote to disks.", labels=_KERNEL_LABELS
    )
    for kernel in kernels:
        stat = kernel.last_stat
        if not stat:
            continue
        labels = [kernel.kernel_id, kernel.record.session_id]
        if (msec := _number(stat, "cpu_used")) is not None:
            cpu.add_metric(labels, msec / 1000)
        if (used := _number(stat, "mem")) is not None:
            memory.add_metric(labels, used)
        if (most := _number(stat, "mem", "stats.max")) is not None:
            peak.add_metric(labels, most)
        if (bytes_in := _number(stat, "io_read")) is not None:
            read.add_metric(labels, bytes_in)
        if (bytes_out := _number(stat, "io_write")) is not None:
            written.add_metric(labels, bytes_out)
    return [by_status, total, held, cpu, memory, peak, read, written]
