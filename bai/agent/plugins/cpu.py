"""The intrinsic ``cpu`` plugin: one device per usable core, minus the cores reserved for the host.

Capacity is what :mod:`bai.agent.plugins.hostres` says this process may use
(CPU affinity, cgroup cpuset and CPU quota).  The ``reserved-cpu`` lowest cores
are kept for the host (core 0 usually serves interrupts) and never allocated;
when the host has no more cores than that, the plugin offers zero ``cpu``.

Allocation is discrete, one core per unit, lowest free cores first, so an
allocation names the exact cores (device ids are the core numbers as strings)
and a backend may pin the kernel to them with a cpuset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

import trio

from bai.agent.alloc import Allocation, AllocMap, DiscreteAllocMap
from bai.agent.plugins import hostres
from bai.agent.plugins.base import ComputePlugin, Device
from bai.common.types import SlotTypes

__all__ = ["CPUPlugin"]

log = logging.getLogger(__name__)

#: The host probes read a few small files; anything slower means a hung filesystem.
PROBE_TIMEOUT = 10.0


class CPUPlugin(ComputePlugin):
    """Offers the ``cpu`` slot (``COUNT``), one unit per core."""

    name: ClassVar[str] = "cpu"
    key = "cpu"

    def __init__(self, reserved_cpu: int = 0) -> None:
        if reserved_cpu < 0:
            raise ValueError(f"reserved_cpu cannot be negative, got {reserved_cpu}")
        self.reserved_cpu = reserved_cpu
        self._host_cores: list[int] = []
        self._devices: list[Device] = []

    async def init(self) -> None:
        """Find the usable cores and their NUMA nodes."""
        with trio.fail_after(PROBE_TIMEOUT):
            cores, nodes = await trio.to_thread.run_sync(_probe, abandon_on_cancel=True)
        self._host_cores = cores
        kept = cores[self.reserved_cpu :]
        if not kept:
            log.warning(
                "the host has %d usable cores and reserved-cpu is %d: no cpu left for kernels",
                len(cores),
                self.reserved_cpu,
            )
        self._devices = [
            Device(
                device_id=str(core),
                slot_name="cpu",
                slot_type=SlotTypes.COUNT,
                capacity=Decimal(1),
                processing_units=1,
                numa_node=nodes[core],
            )
            for core in kept
        ]

    def slot_types(self) -> dict[str, SlotTypes]:
        return {"cpu": SlotTypes.COUNT}

    def devices(self) -> Sequence[Device]:
        return tuple(self._devices)

    def create_alloc_map(self) -> AllocMap:
        return DiscreteAllocMap(
            (device.alloc_slot() for device in self._devices), slot_types=self.slot_types()
        )

    @staticmethod
    def cores(allocation: Allocation) -> list[int]:
        """The core numbers an allocation of this plugin holds, ascending (for a cpuset)."""
        return sorted(int(core) for core in allocation.get("cpu", {}))

    def extra_info(self) -> dict[str, Any]:
        return {"host_cores": len(self._host_cores), "reserved_cpu": self.reserved_cpu}


def _probe() -> tuple[list[int], dict[int, int | None]]:
    cores = hostres.usable_cores()
    quota = hostres.cgroup_cpu_limit()
    if quota is not None:
        # A quota of 2.5 CPUs cannot give three kernels a full core each.
        cores = cores[: max(1, int(quota))]
    return cores, hostres.core_numa_nodes(cores)
